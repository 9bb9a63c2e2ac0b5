import { Type, type Static } from '@sinclair/typebox';
import { NullableTimestamp, Timestamp } from './common.js';

export const RoleSchema = Type.Union([Type.Literal('admin'), Type.Literal('user'), Type.Literal('worker')]);

export const TokenView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: RoleSchema,
  created_at: Timestamp,
  created_by: Type.Union([Type.String(), Type.Null()]),
  last_used_at: NullableTimestamp,
  revoked_at: NullableTimestamp,
});

export const CreateTokenBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_.@:-]+$' }),
    role: RoleSchema,
  },
  { additionalProperties: false },
);
export type CreateTokenBody = Static<typeof CreateTokenBody>;

export const CreatedToken = Type.Intersect([
  TokenView,
  Type.Object({ token: Type.String({ description: 'The secret, shown this once only.' }) }),
]);

export const ListTokensQuery = Type.Object(
  { include_revoked: Type.Optional(Type.Boolean({ default: false })) },
  { additionalProperties: false },
);
