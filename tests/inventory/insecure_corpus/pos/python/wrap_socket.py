import socket
import ssl

sock = ssl.wrap_socket(socket.socket(), cert_reqs=ssl.CERT_NONE)
