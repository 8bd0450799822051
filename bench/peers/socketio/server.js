// The Socket.IO peer of BENCHMARKS.md: the chat behaviour `chorus-bench
// --protocol socketio` drives, on socket.io with @socket.io/redis-adapter, so
// two of these processes over one Redis compare with two chorus nodes.
//
// - A client connects to namespace "/" with {"username": ...} as its auth.
// - `join` {"room": ...} adds it to the room and acks {"ok": true}.
// - `message` {"room": ..., "content": ...} goes to every member of the room
//   on every node, sender included, as `message` {"room", "user", "content"}.
//
// Settings come from the environment: PORT (default 3000), REDIS_URL (default
// redis://127.0.0.1:6379). It listens on 127.0.0.1 only. GET /ready answers
// 200 once the Redis adapter is up.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on("error", (err) => console.error("redis:", err.message));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  let ready = false;
  const server = http.createServer((req, res) => {
    if (req.url === "/ready") {
      res.writeHead(ready ? 200 : 503).end(ready ? "ok" : "starting");
    } else {
      res.writeHead(404).end();
    }
  });
  const io = new Server(server, { adapter: createAdapter(pubClient, subClient) });

  io.on("connection", (socket) => {
    const user = String((socket.handshake.auth || {}).username || "");
    socket.on("join", (join, ack) => {
      socket.join(String(join && join.room));
      if (typeof ack === "function") ack({ ok: true });
    });
    socket.on("message", (message) => {
      if (!message || typeof message.room !== "string") return;
      // io.to (not socket.to) includes the sender, as chorus does.
      io.to(message.room).emit("message", {
        room: message.room,
        user,
        content: message.content,
      });
    });
  });

  server.listen(port, "127.0.0.1", () => {
    ready = true;
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
