/**
 * The rule "no query outside storage": SQL is written only in src/storage/ and in `*-repo.ts`
 * files beside their domain (src/cluster/cluster-repo.ts). Everywhere else code calls a repo
 * function; it builds no query, opens no transaction and imports no value from Kysely (types
 * are fine: `import type { Kysely }`). See docs/architecture.md "Layout".
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');

/** Methods of Kysely that start a query or a transaction. */
const QUERY_METHODS = new Set([
  'selectFrom',
  'updateTable',
  'insertInto',
  'replaceInto',
  'deleteFrom',
  'mergeInto',
  'transaction',
  'selectNoFrom',
]);

/** Where SQL may be written. */
function mayQuery(path: string): boolean {
  const p = path.split(sep).join('/');
  return p.startsWith('src/storage/') || p.endsWith('-repo.ts');
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(path));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts'))
      out.push(path);
  }
  return out;
}

/** Every use of the query builder in `text`, as "line: what". */
function queriesIn(fileName: string, text: string): string[] {
  const file = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const at = (n: ts.Node, what: string) =>
    found.push(`${file.getLineAndCharacterOfPosition(n.getStart(file)).line + 1}: ${what}`);
  const isKysely = (s: ts.Expression) => ts.isStringLiteral(s) && s.text === 'kysely';
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) && isKysely(n.moduleSpecifier)) {
      const c = n.importClause;
      const typeOnly =
        c !== undefined &&
        (c.isTypeOnly ||
          (c.name === undefined &&
            c.namedBindings !== undefined &&
            ts.isNamedImports(c.namedBindings) &&
            c.namedBindings.elements.every((e) => e.isTypeOnly)));
      if (!typeOnly) at(n, "a value imported from 'kysely'");
    } else if (
      ts.isExportDeclaration(n) &&
      n.moduleSpecifier &&
      isKysely(n.moduleSpecifier) &&
      !n.isTypeOnly
    ) {
      at(n, "a value exported from 'kysely'");
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = n.arguments;
      if (arg && isKysely(arg)) at(n, "import('kysely')");
    } else if (ts.isCallExpression(n) && ts.isPropertyAccessExpression(n.expression)) {
      const name = n.expression.name.text;
      if (QUERY_METHODS.has(name)) at(n.expression.name, `.${name}(`);
    } else if (ts.isTaggedTemplateExpression(n) && ts.isIdentifier(n.tag) && n.tag.text === 'sql') {
      at(n, 'sql`...`');
    }
    ts.forEachChild(n, visit);
  };
  visit(file);
  return found;
}

describe('SQL lives in storage', () => {
  it('finds the query builder where it is used (the check checks)', () => {
    const code = [
      "import { sql, type Kysely } from 'kysely';",
      "import type { Transaction } from 'kysely';",
      "import { type Selectable } from 'kysely';",
      'async function f(db: Kysely<never>) {',
      "  await db\n    .selectFrom('tasks').selectAll().execute();",
      '  await db.transaction().execute(async () => undefined);',
      '  return sql<number>`1`;',
      '}',
      "// db.updateTable('tasks') in a comment is not a query",
    ].join('\n');
    expect(queriesIn('x.ts', code)).toEqual([
      "1: a value imported from 'kysely'",
      '6: .selectFrom(',
      '7: .transaction(',
      '8: sql`...`',
    ]);
  });

  it('is used nowhere else: no query, transaction or Kysely value outside src/storage and *-repo.ts', () => {
    const offences: string[] = [];
    for (const path of sourceFiles(join(ROOT, 'src'))) {
      const rel = relative(ROOT, path);
      if (mayQuery(rel)) continue;
      for (const q of queriesIn(rel, readFileSync(path, 'utf8'))) offences.push(`${rel}:${q}`);
    }
    expect(offences, 'move these into a repository (src/storage/*-repo.ts or <domain>/*-repo.ts)').toEqual(
      [],
    );
  });
});
