// The memory cap written into a core module: growth past it fails, growth below it works, a
// tighter maximum the module already declares is kept, and a module that starts above the cap
// is refused with a clear message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capMemory } from '../wasm-limits.js';

const PAGE = 65536;

/** A module exporting one memory with `min` pages (and `max`, if given). */
function moduleWithMemory(min, max) {
  const limits = max === undefined ? [0x00, min] : [0x01, min, max];
  const section = [0x01, ...limits]; // one memory
  const exp = [0x01, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00]; // export "mem" = memory 0
  return Uint8Array.of(0, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    0x05, section.length, ...section,
    0x07, exp.length, ...exp);
}

const memoryOf = (bytes) => new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.mem;

test('a memory without a maximum cannot grow past the cap', () => {
  const mem = memoryOf(capMemory(moduleWithMemory(1), 4 * PAGE));
  assert.equal(mem.grow(3), 1, 'growing up to the cap works');
  assert.throws(() => mem.grow(1), RangeError, 'one page more fails');
  assert.equal(mem.buffer.byteLength, 4 * PAGE);
});

test('without the cap the same module grows freely (the test can fail)', () => {
  const mem = memoryOf(moduleWithMemory(1));
  mem.grow(8);
  assert.equal(mem.buffer.byteLength, 9 * PAGE);
});

test('a tighter declared maximum is kept', () => {
  const mem = memoryOf(capMemory(moduleWithMemory(1, 2), 100 * PAGE));
  assert.throws(() => mem.grow(2), RangeError);
  assert.equal(mem.grow(1), 1);
});

test('a guest that needs more than the cap at start is refused clearly', () => {
  assert.throws(() => capMemory(moduleWithMemory(10), 4 * PAGE), /needs 655360 bytes of memory at start, over the cap of 262144/);
  assert.throws(() => capMemory(Uint8Array.of(1, 2, 3), PAGE), /not a WebAssembly module/);
});
