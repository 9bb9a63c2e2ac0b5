import type { IncomingMessage } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';

/**
 * TRUST_PROXY in Fastify's terms. Behind a trusted proxy, `req.protocol`, `req.ip` and
 * `req.host` come from its X-Forwarded-Proto, -For and -Host; from anyone else those headers are
 * ignored, so a client cannot claim https (and a Secure cookie) or another address by itself.
 */
export function trustProxyOption(
  spec: string,
): boolean | string[] | ((address: string, hop: number) => boolean) {
  const s = spec.trim();
  if (s === 'off') return false;
  if (s === 'true') return true;
  // A hop count: the nearest n proxies (Fastify's own rule for a number, which its types omit).
  if (/^[0-9]+$/.test(s)) {
    const hops = Number(s);
    return (_address, hop) => hop < hops;
  }
  return s.split(',').map((a) => a.trim());
}

/**
 * The client's address of a raw request (the WebSocket upgrade, which Fastify does not see),
 * by the same TRUST_PROXY rule as `req.ip`: behind a trusted proxy the per-address limits
 * count each worker, not the proxy.
 */
export function clientAddressOf(spec: string): (req: IncomingMessage) => string {
  const trust = trustProxyOption(spec);
  if (trust === false) return (req) => req.socket.remoteAddress ?? '';
  const check = trust === true ? () => true : Array.isArray(trust) ? proxyAddr.compile(trust) : trust;
  return (req) => proxyAddr(req, check);
}
