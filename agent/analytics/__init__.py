"""Analytics: from per-frame face observations to the only statistics that leave the device.

Pure Python and numpy (no cv2, LiteRT, paho or picamera2). The service wires it like this::

    tracker = Tracker(cfg.analytics.tracker, clock)          # random ephemeral ids, never exported
    noise = DiscreteLaplace()                                 # secrets.SystemRandom by default
    accountant = BudgetAccountant(cfg.state_dir, cfg.analytics.dp.daily_budget)
    aggregator = WindowAggregator(cfg.analytics, clock, dp=noise, accountant=accountant)
    baseline = Baseline(cfg.state_dir, cfg.analytics.baseline, keep_days=cfg.retention.stats_days)
    alerts = AlertEngine(cfg.analytics.alerts, baseline=baseline)  # timed by windows, not a clock

    views = tracker.update(observations, t)                   # list[TrackView], no ids, no boxes
    aggregator.add_frame(t, views, FrameCounters(captured=1, analysed=1, dropped=0,
                                                 lifetimes_ms=recorder.drain().samples_ms))
    for report in aggregator.poll(clock.time()):              # list[WindowReport]
        publish("stats", report.to_body())                    # integers only: signed later
        for event in alerts.evaluate(report):                 # list[AlertEvent], raised/cleared
            publish("alert", event.to_body())
    aggregator.flush(clock.time())                            # end of a file, SIGTERM

    health = HealthMeter(clock)                               # fps, inference ms, drops, camera
    health.frame(inference_ms=12.5) ; publish("health", health.figures().to_body())

Modules: ``tracker`` (association, smoothing), ``windows`` (clock-aligned windows, reports),
``anonymity`` (cells, k, shares, circumplex), ``dp`` (discrete Laplace, daily budget),
``alerts`` and ``baseline`` (rules, hysteresis, cooldown, hour-of-week baseline), ``health``,
``settings`` (config sections). Decisions are written down in docs/analytics.md.
"""
