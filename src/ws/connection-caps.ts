import type { Config } from '../config/schema.js';

/** A place taken under the caps; given back once when its socket ends (or never opened). */
export type Place = { ok: true; release: () => void } | { ok: false; message: string };

/**
 * WebSocket connections counted per token and per client address, so one token or one
 * address cannot take every place under MAX_CLIENTS. A place is taken when the upgrade is
 * authenticated (before the handshake, so a refusal costs a 429 and no socket) and given
 * back when the socket closes. Each cap is held below MAX_CLIENTS, so another token or
 * address always finds room.
 */
export class ConnectionCaps {
  private readonly byToken = new Map<string, number>();
  private readonly byAddress = new Map<string, number>();
  readonly perToken: number;
  readonly perAddress: number;

  constructor(
    config: Pick<Config, 'MAX_CLIENTS' | 'MAX_CONNECTIONS_PER_TOKEN' | 'MAX_CONNECTIONS_PER_ADDRESS'>,
  ) {
    const room = Math.max(1, config.MAX_CLIENTS - 1);
    this.perToken = Math.min(config.MAX_CONNECTIONS_PER_TOKEN, room);
    this.perAddress = Math.min(config.MAX_CONNECTIONS_PER_ADDRESS, room);
  }

  /**
   * Why a connection from `address` would be refused whatever its token, or null: checked
   * before the token is looked up, so a hog reconnecting in a loop costs no database read.
   */
  addressRefusal(address: string): string | null {
    const ofAddress = this.byAddress.get(address) ?? 0;
    if (ofAddress < this.perAddress) return null;
    return `${ofAddress} connections from this address already (MAX_CONNECTIONS_PER_ADDRESS=${this.perAddress})`;
  }

  /** Takes a place for a connection of `tokenId` (null: anonymous) from `address`, or says which cap refuses it. */
  take(tokenId: string | null, address: string): Place {
    const ofToken = tokenId === null ? 0 : (this.byToken.get(tokenId) ?? 0);
    if (tokenId !== null && ofToken >= this.perToken) {
      return {
        ok: false,
        message: `token ${tokenId} already holds ${ofToken} connections (MAX_CONNECTIONS_PER_TOKEN=${this.perToken})`,
      };
    }
    const full = this.addressRefusal(address);
    if (full !== null) return { ok: false, message: full };
    const ofAddress = this.byAddress.get(address) ?? 0;
    if (tokenId !== null) this.byToken.set(tokenId, ofToken + 1);
    this.byAddress.set(address, ofAddress + 1);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        if (tokenId !== null) decrement(this.byToken, tokenId);
        decrement(this.byAddress, address);
      },
    };
  }
}

function decrement(counts: Map<string, number>, key: string): void {
  const n = (counts.get(key) ?? 1) - 1;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
}
