// A minimal Node `ws` relay: every text frame goes to every open client, or, for a client
// that connected with `?room=NAME`, to the other clients of that room.
//   node ws_broadcast.js PORT
// No auth, no persistence, no acks.
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2]);
const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (socket, request) => {
  const room = new URL(request.url, "http://x").searchParams.get("room");
  if (room === null) {
    socket.on("message", (data, isBinary) => {
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      }
    });
    return;
  }
  if (!rooms.has(room)) rooms.set(room, new Set());
  const members = rooms.get(room);
  members.add(socket);
  socket.on("close", () => {
    members.delete(socket);
    if (members.size === 0) rooms.delete(room);
  });
  socket.on("message", (data, isBinary) => {
    for (const client of members) {
      if (client !== socket && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
wss.on("listening", () => console.log(`listening on ${port}`));
