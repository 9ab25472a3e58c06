// bench/http peer: Node's built-in http module, as a user would write it.
//
// usage: node server.js PORT
//
// GET /ping -> pong; GET /fact?n=N -> bit length of N!, by a plain loop of
// BigInt multiplications (on the event loop); GET /spin?n=N -> N xorshift
// rounds.
'use strict';
const http = require('node:http');

function fact(n) {
  let acc = 1n;
  for (let i = 2n; i <= n; i++) acc *= i;
  return acc;
}

function bitLength(x) {
  return x === 0n ? 0 : x.toString(2).length;
}

function spin(n) {
  const mask = (1n << 64n) - 1n;
  let x = 0x9E3779B97F4A7C15n; // the contract's seed (crates/console/src/endpoints.rs)
  for (let i = 0; i < n; i++) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
  }
  return x;
}

function reply(res, status, body) {
  res.writeHead(status, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (req.method !== 'GET') return reply(res, 405, 'method not allowed');
  if (url.pathname === '/ping') return reply(res, 200, 'pong');
  if (url.pathname === '/fact' || url.pathname === '/spin') {
    const raw = url.searchParams.get('n');
    if (raw === null || !/^[0-9]+$/.test(raw)) {
      return reply(res, 400, 'n must be a non-negative integer');
    }
    const body = url.pathname === '/fact'
      ? String(bitLength(fact(BigInt(raw))))
      : String(spin(Number(raw)));
    return reply(res, 200, body);
  }
  return reply(res, 404, 'not found');
});

const port = Number(process.argv[2] || 8080);
server.listen(port, '127.0.0.1', () => {
  console.log(`node peer: listening on 127.0.0.1:${port}`);
});
