import type { AnchorHTMLAttributes, ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { errorMessage } from '../api.js';
import { navigate } from '../router.js';

/** A link that moves within the panel without reloading; modifier clicks open tabs as usual. */
export function Link(props: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const { href, onClick, ...rest } = props;
  return (
    <a
      href={href}
      {...rest}
      onClick={(e) => {
        if (typeof onClick === 'function') onClick(e);
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(href);
      }}
    />
  );
}

/** A progress bar people and screen readers can read. */
export function Progress({ value, label, status }: { value: number; label?: string; status?: string }) {
  const v = Math.max(0, Math.min(100, Number.isFinite(value) ? value : 0));
  return (
    <div
      class={`progress ${status ? 'progress-' + status : ''}`}
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(v * 10) / 10}
      aria-label={label ?? 'Progress'}
    >
      <div class="progress-fill" style={{ width: `${v}%` }} />
      <span class="progress-text">{v.toFixed(v > 0 && v < 10 ? 1 : 0)}%</span>
    </div>
  );
}

/** Utilization from 0 to 100, coloured by how busy. */
export function Meter({ value, label }: { value: number | null; label: string }) {
  if (value === null) return <span class="muted">—</span>;
  const v = Math.max(0, Math.min(100, value));
  const level = v >= 90 ? 'high' : v >= 60 ? 'mid' : 'low';
  return (
    <div
      class={`meter meter-${level}`}
      role="meter"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={v}
      aria-label={label}
    >
      <div class="meter-fill" style={{ width: `${v}%` }} />
      <span class="meter-text">{v.toFixed(0)}%</span>
    </div>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status}`}>{status}</span>;
}

export function ErrorNote({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  return (
    <div class="note note-error" role="alert">
      {title ? <strong>{title}: </strong> : null}
      {errorMessage(error)}
    </div>
  );
}

export function Loading({ what }: { what?: string }) {
  return (
    <p class="muted" aria-live="polite">
      Loading{what ? ` ${what}` : ''}…
    </p>
  );
}

/** A place for data a later server version provides; says so instead of showing nothing. */
export function Pending({ children }: { children: ComponentChildren }) {
  return <p class="note note-pending">{children}</p>;
}

export function Section(props: {
  title: string;
  id?: string;
  actions?: ComponentChildren;
  children: ComponentChildren;
}) {
  const id = props.id ?? props.title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  return (
    <section class="card" aria-labelledby={id}>
      <div class="card-head">
        <h2 id={id}>{props.title}</h2>
        {props.actions ? <div class="card-actions">{props.actions}</div> : null}
      </div>
      {props.children}
    </section>
  );
}

/**
 * A button that asks before doing something that cannot be undone: the first press shows
 * "Confirm" and "Keep" in place (no modal to trap focus, usable from the keyboard).
 */
export function ConfirmButton(props: {
  label: string;
  confirmLabel?: string;
  onConfirm: () => Promise<void> | void;
  disabled?: boolean;
  class?: string;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking)
    return (
      <button
        type="button"
        class={props.class ?? 'danger'}
        disabled={props.disabled}
        onClick={() => setAsking(true)}
      >
        {props.label}
      </button>
    );
  return (
    <span class="confirm" role="group" aria-label={`Confirm ${props.label.toLowerCase()}`}>
      <button
        type="button"
        class={`danger${props.class?.includes('small') ? ' small' : ''}`}
        disabled={busy}
        ref={(el) => el?.focus()}
        onClick={async () => {
          setBusy(true);
          try {
            await props.onConfirm();
          } finally {
            setBusy(false);
            setAsking(false);
          }
        }}
      >
        {props.confirmLabel ?? `Yes, ${props.label.toLowerCase()}`}
      </button>
      <button
        type="button"
        class={`secondary${props.class?.includes('small') ? ' small' : ''}`}
        onClick={() => setAsking(false)}
      >
        Keep
      </button>
    </span>
  );
}

/** "1–50 of 123" with previous and next. */
export function Pager(props: {
  offset: number;
  limit: number;
  total: number;
  onPage: (offset: number) => void;
}) {
  const { offset, limit, total } = props;
  if (total <= limit && offset === 0) return null;
  const last = Math.min(total, offset + limit);
  return (
    <nav class="pager" aria-label="Pages">
      <button
        type="button"
        class="secondary"
        disabled={offset === 0}
        onClick={() => props.onPage(Math.max(0, offset - limit))}
      >
        ← Previous
      </button>
      <span aria-live="polite">
        {total === 0 ? 0 : offset + 1}–{last} of {total}
      </span>
      <button
        type="button"
        class="secondary"
        disabled={last >= total}
        onClick={() => props.onPage(offset + limit)}
      >
        Next →
      </button>
    </nav>
  );
}

/** A label, its input and the error beside it, wired for screen readers. */
export function Field(props: {
  id: string;
  label: string;
  error?: string | undefined;
  hint?: string;
  children: (aria: { id: string; 'aria-invalid': boolean; 'aria-describedby'?: string }) => ComponentChildren;
}) {
  const describedBy = [props.hint ? `${props.id}-hint` : '', props.error ? `${props.id}-error` : '']
    .filter(Boolean)
    .join(' ');
  return (
    <div class={`field ${props.error ? 'field-invalid' : ''}`}>
      <label for={props.id}>{props.label}</label>
      {props.children({
        id: props.id,
        'aria-invalid': !!props.error,
        ...(describedBy ? { 'aria-describedby': describedBy } : {}),
      })}
      {props.hint ? (
        <small id={`${props.id}-hint`} class="hint">
          {props.hint}
        </small>
      ) : null}
      {props.error ? (
        <small id={`${props.id}-error`} class="field-error" role="alert">
          {props.error}
        </small>
      ) : null}
    </div>
  );
}

/** Key/value pairs. */
export function Facts({ items }: { items: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {items.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v ?? '—'}</dd>
        </div>
      ))}
    </dl>
  );
}
