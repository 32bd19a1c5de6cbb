// A live feed over a WebSocket that reconnects with backoff, shows its
// state, keeps itself alive with pings, and resumes from the versions it saw.
// `protocols` (an async function) gives the subprotocols to offer on each
// connect: an order feed's session rides there as "bearer.<token>".
export function openFeed(path, { onMessage, onState, protocols }) {
  const versions = {};
  let socket = null;
  let attempt = 0;
  let pinger = null;
  let closedByUs = false;

  const url = () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

  async function connect() {
    onState("connecting");
    socket = new WebSocket(url(), protocols ? await protocols() : undefined);
    socket.onopen = () => {
      attempt = 0;
      onState("live");
      if (Object.keys(versions).length) {
        socket.send(JSON.stringify({ type: "resume", versions }));
      }
      pinger = setInterval(() => socket.readyState === 1 && socket.send("ping"), 25000);
    };
    socket.onmessage = (event) => {
      if (event.data === "pong") return;
      const message = JSON.parse(event.data);
      if (message.type === "stock") versions[message.sku] = message.version;
      if (message.type === "snapshot") for (const s of message.skus) versions[s.sku] = s.version;
      onMessage(message);
    };
    socket.onclose = () => {
      clearInterval(pinger);
      if (closedByUs) return;
      onState("offline");
      // 0.5 s, 1 s, 2 s … up to 15 s, with jitter.
      const delay = Math.min(15000, 500 * 2 ** attempt++) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  connect();
  return { close() { closedByUs = true; socket && socket.close(); } };
}

export function showState(element, state) {
  element.dataset.state = state;
  element.textContent = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…" }[state];
}
