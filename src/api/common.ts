import { Type, type Static, type TProperties, type TSchema } from '@sinclair/typebox';

/** The one error shape every HTTP error answers with. */
export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable machine-readable code, e.g. task_not_found.' }),
      message: Type.String({ description: 'What went wrong, for people.' }),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { description: 'Every error answers with this shape.' },
);
export type ErrorBody = Static<typeof ErrorBody>;

/** A page of a list, with the total so clients can page. */
export const Page = <T extends TSchema>(item: T) =>
  Type.Object({
    items: Type.Array(item),
    total: Type.Integer({ description: 'How many match the filter in all.' }),
    limit: Type.Integer(),
    offset: Type.Integer(),
  });

export const PageQuery = {
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 500, default: 50, description: 'Page size (1-500).' }),
  ),
  offset: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'Items to skip.' })),
};

/** A list's query: its filters and a page ({@link PageQuery}); unknown parameters are refused. */
export const ListQuery = <P extends TProperties>(filters: P) =>
  Type.Object({ ...filters, ...PageQuery }, { additionalProperties: false });

/** A status change's body: `{ status }`, nothing else. */
export const StatusBody = <S extends TSchema>(status: S) =>
  Type.Object({ status }, { additionalProperties: false });

export const IdParam = Type.Object({ id: Type.Integer({ minimum: 1, description: 'Task id.' }) });
export const StringIdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 255 }) });

/** ISO 8601 UTC timestamp. */
export const Timestamp = Type.String({ format: 'date-time' });
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);
