"""Camera sources: replay (files, folders), OpenCV (V4L2, RTSP, HTTP), picamera2; see base.py."""
