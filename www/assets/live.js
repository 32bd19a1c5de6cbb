// The live feed is the storefront kit's (reconnects with backoff and
// jitter, pings, resumes from the versions it saw): these pages use the
// kit they serve.
export { openFeed } from "/kit/edgestock.js";

export function showState(element, state) {
  element.dataset.state = state;
  element.textContent = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…" }[state];
}
