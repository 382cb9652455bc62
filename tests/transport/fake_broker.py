"""A tiny MQTT 3.1.1-only broker stand-in: refuses MQTT 5 CONNECTs the way a 3.1.1 broker must
(CONNACK return code 0x01, "unacceptable protocol version") and accepts 3.1.1 ones."""

from __future__ import annotations

import socket
import threading


class Mqtt311OnlyBroker:
    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.levels: list[int] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Mqtt311OnlyBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(5)

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            self._conns.append(conn)
            conn.settimeout(5)
            try:
                level = self._read_connect(conn)
            except OSError:
                continue
            self.levels.append(level)
            if level == 4:
                conn.sendall(b"\x20\x02\x00\x00")  # accepted; the connection stays open
            else:
                conn.sendall(b"\x20\x02\x00\x01")  # unacceptable protocol version
                conn.close()

    @staticmethod
    def _read_connect(conn: socket.socket) -> int:
        header = conn.recv(1)
        if header != b"\x10":
            raise OSError("not a CONNECT")
        length, shift = 0, 0
        while True:
            byte = conn.recv(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise OSError("closed")
            body += chunk
        name_len = int.from_bytes(body[:2], "big")
        return body[2 + name_len]
