// The file-backed KV on its own: read-your-writes inside a transaction, nothing stored before
// commit, all writes of a commit together, bytewise key order, paging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileKv, Transaction } from '../kv.js';

const bytes = (s) => new TextEncoder().encode(s);
const text = (b) => (b === undefined ? undefined : new TextDecoder().decode(b));
const fresh = () => join(mkdtempSync(join(tmpdir(), 'kv-')), 'kv.json');

test('writes are visible in their transaction and stored only on commit', () => {
  const path = fresh();
  const kv = new FileKv(path);
  const tx = new Transaction(kv);
  tx.set('a', bytes('1'));
  tx.set('b', bytes('2'));
  tx.delete('b');
  assert.equal(text(tx.get('a')), '1');
  assert.equal(tx.get('b'), undefined);
  assert.equal(new Transaction(kv).get('a'), undefined, 'not visible outside before commit');
  kv.commit(tx.writes);
  assert.equal(text(new FileKv(path).map.get('a')), '1', 'durable: a new store reads it back');
  assert.deepEqual(readdirSync(join(path, '..')), ['kv.json'], 'no temp file left behind');
});

test('cas compares against the transaction view; none means absent', () => {
  const kv = new FileKv(fresh());
  const tx = new Transaction(kv);
  assert.equal(tx.cas('k', undefined, bytes('1')), true);
  assert.equal(tx.cas('k', undefined, bytes('2')), false);
  assert.equal(tx.cas('k', bytes('1'), undefined), true);
  assert.equal(tx.get('k'), undefined);
});

test('scans are in bytewise (UTF-8) order and page with a cursor', () => {
  const kv = new FileKv(fresh());
  const setup = new Transaction(kv);
  // UTF-16 puts U+1F600 (a surrogate pair, D83D...) before U+FF5E; UTF-8 bytes put it after.
  for (const k of ['p/\u{1F600}', 'p/\uFF5E', 'p/a', 'p/b', 'q/x']) setup.set(k, bytes(k));
  kv.commit(setup.writes);
  const tx = new Transaction(kv);
  tx.set('p/aa', bytes('new'));
  tx.delete('p/b');
  const keys = [];
  let cursor;
  let pages = 0;
  do {
    const page = tx.scanPrefix('p/', cursor, 2);
    keys.push(...page.entries.map((e) => e.key));
    cursor = page.next;
    pages += 1;
  } while (cursor !== undefined);
  assert.deepEqual(keys, ['p/a', 'p/aa', 'p/\uFF5E', 'p/\u{1F600}']);
  assert.equal(pages, 2);
});
