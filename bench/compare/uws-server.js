// The chat's plain /ws/<id> protocol on uWebSockets.js, for chat-bench to compare with:
// one pub/sub topic for the room, compression off, as its examples do.
//
//   npm install --prefix bench/compare && node bench/compare/uws-server.js 8000
'use strict';
const uWS = require('uwebsockets');

const port = Number(process.argv[2] || 8000);
const app = uWS.App();
app.ws('/ws/:id', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  // As much as our server queues for a member by default (1 MiB), then the slow
  // consumer is dropped rather than buffered without end.
  maxBackpressure: 1024 * 1024,
  closeOnBackpressureLimit: true,
  idleTimeout: 0,
  upgrade: (res, req, context) => {
    res.upgrade(
      { id: req.getParameter(0) },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => {
    ws.subscribe('room');
    app.publish('room', `Client #${ws.getUserData().id} has entered the chat`);
  },
  message: (ws, message, isBinary) => {
    const text = Buffer.from(message).toString();
    app.publish('room', `Client #${ws.getUserData().id}: ${text}`, isBinary);
  },
  close: (ws) => {
    app.publish('room', `Client #${ws.getUserData().id} has left the chat`);
  },
});
app.listen('127.0.0.1', port, (listening) => {
  if (!listening) {
    console.error(`cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`uWebSockets.js chat on 127.0.0.1:${port}`);
});
