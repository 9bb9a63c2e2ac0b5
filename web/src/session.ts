import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { SessionView } from '../../src/api/session.js';

/** Who is logged in, for pages that need it (users page: "you"). */
export const SessionContext = createContext<SessionView | null>(null);

export function useSession(): SessionView | null {
  return useContext(SessionContext);
}
