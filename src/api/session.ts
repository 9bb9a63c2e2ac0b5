import { Type, type Static } from '@sinclair/typebox';
import { NullableTimestamp, Timestamp } from './common.js';

/**
 * Admin-panel login and users. The panel logs in with a username and password and gets
 * an httpOnly session cookie plus a CSRF token to send as X-CSRF-Token on every change.
 */
export const Username = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9_.@-]+$',
  description: 'Letters, digits, _ . @ -; case-insensitive (stored lower-case).',
});
export const Password = Type.String({
  minLength: 8,
  maxLength: 1024,
  description: 'At least 8 characters.',
});

export const LoginBody = Type.Object(
  {
    username: Type.String({ minLength: 1, maxLength: 255 }),
    password: Type.String({ minLength: 1, maxLength: 1024 }),
  },
  { additionalProperties: false },
);
export type LoginBody = Static<typeof LoginBody>;

export const SessionView = Type.Object(
  {
    kind: Type.Union([Type.Literal('session'), Type.Literal('token')], {
      description: 'How this request was authenticated.',
    }),
    username: Type.String({ description: 'The user, or the token name.' }),
    user_id: Type.Union([Type.Integer(), Type.Null()]),
    role: Type.String(),
    csrf_token: Type.Union([Type.String(), Type.Null()], {
      description: 'Send as X-CSRF-Token with every state-changing request made with the cookie.',
    }),
    expires_at: NullableTimestamp,
  },
  { description: 'Who is logged in.' },
);
export type SessionView = Static<typeof SessionView>;

export const UserView = Type.Object({
  id: Type.Integer(),
  username: Type.String(),
  role: Type.Literal('admin'),
  created_at: Timestamp,
  updated_at: Timestamp,
});
export type UserView = Static<typeof UserView>;

export const CreateUserBody = Type.Object(
  { username: Username, password: Password },
  { additionalProperties: false },
);
export type CreateUserBody = Static<typeof CreateUserBody>;

export const ChangePasswordBody = Type.Object(
  {
    password: Password,
    current_password: Type.Optional(
      Type.String({ maxLength: 1024, description: 'Needed when changing your own password.' }),
    ),
  },
  { additionalProperties: false },
);
export type ChangePasswordBody = Static<typeof ChangePasswordBody>;

export const UserIdParam = Type.Object({ id: Type.Integer({ minimum: 1, description: 'User id.' }) });
