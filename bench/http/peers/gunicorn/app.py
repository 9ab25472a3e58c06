"""bench/http peer: a tiny WSGI app, served by gunicorn with sync workers.

    gunicorn --workers 2 --bind 127.0.0.1:PORT app:app

GET /ping -> pong; GET /fact?n=N -> bit length of N!, by a plain loop of int
multiplications; GET /spin?n=N -> N xorshift rounds.
"""

from urllib.parse import parse_qs

MASK = (1 << 64) - 1
SPIN_SEED = 0x9E3779B97F4A7C15  # the contract's (crates/console/src/endpoints.rs)


def fact(n):
    acc = 1
    for i in range(2, n + 1):
        acc *= i
    return acc


def spin(n):
    x = SPIN_SEED
    for _ in range(n):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
    return x


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") != "GET":
        status, body = "405 Method Not Allowed", "method not allowed"
    elif path == "/ping":
        status, body = "200 OK", "pong"
    elif path in ("/fact", "/spin"):
        raw = parse_qs(environ.get("QUERY_STRING", "")).get("n", [""])[0]
        if not raw.isdigit():
            status, body = "400 Bad Request", "n must be a non-negative integer"
        elif path == "/fact":
            status, body = "200 OK", str(fact(int(raw)).bit_length())
        else:
            status, body = "200 OK", str(spin(int(raw)))
    else:
        status, body = "404 Not Found", "not found"
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(data)))])
    return [data]
