/**
 * Node's options for a server whose clients must send their request headers within
 * `seconds`; the deadline is checked at a quarter of it (at most every 5 s). Used by every
 * HTTP port: the API, the WebSocket gateway's upgrades and the model server.
 */
export function headerDeadline(seconds: number): {
  headersTimeout: number;
  connectionsCheckingInterval: number;
} {
  return {
    headersTimeout: seconds * 1000,
    connectionsCheckingInterval: Math.max(100, Math.min(5000, (seconds * 1000) / 4)),
  };
}
