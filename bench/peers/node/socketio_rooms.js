// Node socket.io rooms: a `msg` event is emitted to everyone in one room (or, with
// `?room=NAME`, to the others in that room).
//   node socketio_rooms.js PORT
// WebSocket transport only. No auth, no persistence, no acks.
"use strict";
const { createServer } = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (socket) => {
  // `?room=NAME`: relay to the others in that room; otherwise everyone is in one room.
  const room = socket.handshake.query.room;
  if (room === undefined) {
    socket.join("room");
    socket.on("msg", (data) => io.to("room").emit("msg", data));
  } else {
    socket.join(room);
    socket.on("msg", (data) => socket.to(room).emit("msg", data));
  }
});
httpServer.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
