// A memory cap for a guest. V8 lets a WebAssembly memory grow to 4 GiB unless the module itself
// declares a maximum, and a worker's `resourceLimits` only bound the JavaScript heap, not
// WebAssembly memory. So before compiling, every memory a core module defines gets a maximum:
// past it `memory.grow` fails, the guest's allocator aborts, and the call traps like any other.

const PAGE = 65536;
const MEMORY_SECTION = 5;

/** Reads an unsigned LEB128 at `pos`; returns [value, next position]. */
function readLeb(bytes, pos) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (pos >= bytes.length) throw new Error('truncated LEB128');
    const byte = bytes[pos++];
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return [value, pos];
    shift += 7;
  }
}

function leb(value) {
  const out = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return out;
}

/**
 * Returns a copy of the core module `wasm` whose defined memories may grow to at most
 * `maxBytes` (a tighter maximum already declared is kept). Throws if a memory starts above it.
 */
export function capMemory(wasm, maxBytes) {
  const bytes = new Uint8Array(wasm);
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new Error('not a WebAssembly module');
  }
  const capPages = Math.floor(maxBytes / PAGE);
  const parts = [bytes.subarray(0, 8)];
  let pos = 8;
  while (pos < bytes.length) {
    const start = pos;
    const id = bytes[pos++];
    const [size, bodyStart] = readLeb(bytes, pos);
    const end = bodyStart + size;
    if (id !== MEMORY_SECTION) {
      parts.push(bytes.subarray(start, end));
      pos = end;
      continue;
    }
    let [count, p] = readLeb(bytes, bodyStart);
    const body = leb(count);
    while (count-- > 0) {
      const flags = bytes[p++];
      if (flags & ~0x03) throw new Error(`memory limits flags ${flags} (memory64?) are not supported`);
      let min;
      let max = Infinity;
      [min, p] = readLeb(bytes, p);
      if (flags & 0x01) [max, p] = readLeb(bytes, p);
      if (min > capPages) throw new Error(`the guest needs ${min * PAGE} bytes of memory at start, over the cap of ${maxBytes}`);
      // Keep the shared bit; always declare a maximum.
      body.push(flags | 0x01, ...leb(min), ...leb(Math.min(max, capPages)));
    }
    parts.push(Uint8Array.of(MEMORY_SECTION, ...leb(body.length), ...body));
    pos = end;
  }
  return Buffer.concat(parts);
}
