// Reading FlatBuffers tables with the official `flatbuffers` runtime (npm package, vendored into
// app/vendor/flatbuffers/ by scripts/prepare.mjs): its ByteBuffer does the addressing (vtables,
// offsets, vectors, strings, 64-bit integers).
//
// The runtime trusts its input: a read past the end returns zeros instead of failing. A model file
// comes from the user (or a network), so every read here is bounds-checked and a truncated or corrupt
// buffer raises FlatbufferError (a MetadataError) instead of decoding garbage.
import { ByteBuffer } from "../vendor/flatbuffers/flatbuffers.js";
import { MetadataError } from "./errors.js";

export class FlatbufferError extends MetadataError {
  get name() {
    return "FlatbufferError";
  }
}

/** flatbuffers' ByteBuffer with bounds checks on the three reads every other read goes through. */
class CheckedByteBuffer extends ByteBuffer {
  check(offset, size) {
    if (!(Number.isInteger(offset) && offset >= 0 && offset + size <= this.capacity())) {
      throw new FlatbufferError(`truncated or corrupt: a read at byte ${offset} (+${size}) is outside the ${this.capacity()}-byte buffer`);
    }
  }
  readUint8(offset) {
    this.check(offset, 1);
    return super.readUint8(offset);
  }
  readUint16(offset) {
    this.check(offset, 2);
    return super.readUint16(offset);
  }
  readInt32(offset) {
    this.check(offset, 4);
    return super.readInt32(offset);
  }
}

// scalar kind -> [size in bytes, ByteBuffer reader]
const SCALARS = {
  bool: [1, (bb, p) => bb.readUint8(p) !== 0],
  byte: [1, (bb, p) => bb.readInt8(p)],
  ubyte: [1, (bb, p) => bb.readUint8(p)],
  short: [2, (bb, p) => bb.readInt16(p)],
  ushort: [2, (bb, p) => bb.readUint16(p)],
  int: [4, (bb, p) => bb.readInt32(p)],
  uint: [4, (bb, p) => bb.readUint32(p)],
  float: [4, (bb, p) => bb.readFloat32(p)],
  long: [8, (bb, p) => bigToNumber(bb.readInt64(p))],
  ulong: [8, (bb, p) => bigToNumber(bb.readUint64(p))],
  double: [8, (bb, p) => bb.readFloat64(p)],
};

function bigToNumber(value) {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new FlatbufferError(`64-bit value ${value} is out of range`);
  }
  return Number(value);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A table at `pos` of a buffer. Slots are field positions in the schema (vtable entry 4 + 2 * slot). */
export class Table {
  constructor(bb, pos) {
    this.bb = bb;
    this.pos = pos;
    bb.check(pos, 4);
    const vtable = pos - bb.readInt32(pos);
    bb.check(vtable, 4);
    const vtSize = bb.readUint16(vtable);
    if (vtSize < 4 || vtSize % 2) throw new FlatbufferError(`corrupt vtable at byte ${vtable}`);
    bb.check(vtable, vtSize);
  }

  /**
   * The root table of `bytes` (Uint8Array). With `identifier`, the buffer must carry that file
   * identifier ("TFL3", "M001"); otherwise FlatbufferError.
   */
  static root(bytes, identifier) {
    const bb = new CheckedByteBuffer(bytes);
    if (identifier) {
      if (bytes.length < 8 || !bb.__has_identifier(identifier)) {
        throw new FlatbufferError(`no ${identifier} file identifier`);
      }
    }
    return new Table(bb, bb.__indirect(bb.position()));
  }

  /** Absolute position of the field in `slot`, or 0 when the field is absent. */
  field(slot) {
    const o = this.bb.__offset(this.pos, 4 + 2 * slot);
    if (o < 0) throw new FlatbufferError(`corrupt vtable entry in the table at byte ${this.pos}`);
    return o ? this.pos + o : 0;
  }

  has(slot) {
    return this.field(slot) !== 0;
  }

  /** A scalar field (kinds as in .fbs: byte, ubyte, int, uint, float, long, ...), `fallback` when absent. */
  scalar(slot, kind, fallback = 0) {
    const p = this.field(slot);
    if (!p) return fallback;
    const [size, read] = SCALARS[kind];
    this.bb.check(p, size);
    return read(this.bb, p);
  }

  string(slot) {
    const p = this.field(slot);
    return p ? this.stringAt(p) : null;
  }

  stringAt(p) {
    const start = this.bb.__indirect(p);
    const length = this.bb.readInt32(start);
    if (length < 0) throw new FlatbufferError(`corrupt string at byte ${start}`);
    this.bb.check(start + 4, length + 1); // + the terminating 0 every FlatBuffers string has
    try {
      return utf8.decode(this.bb.bytes().subarray(start + 4, start + 4 + length));
    } catch {
      throw new FlatbufferError(`string at byte ${start} is not UTF-8`);
    }
  }

  /** {start, length} of a vector field whose elements are `size` bytes each, or null when absent. */
  vector(slot, size) {
    const p = this.field(slot);
    if (!p) return null;
    const length = this.bb.__vector_len(p);
    const start = this.bb.__vector(p);
    if (length < 0) throw new FlatbufferError(`corrupt vector at byte ${start - 4}`);
    this.bb.check(start, length * size);
    return { start, length };
  }

  /** A vector of scalars as an array (null when absent). */
  scalars(slot, kind) {
    const [size, read] = SCALARS[kind];
    const v = this.vector(slot, size);
    return v ? Array.from({ length: v.length }, (_, i) => read(this.bb, v.start + size * i)) : null;
  }

  /** A vector of scalars with the position of its first element (for patching in place). */
  scalarsAt(slot, kind) {
    const v = this.vector(slot, SCALARS[kind][0]);
    return v ? { pos: v.start, values: this.scalars(slot, kind) } : null;
  }

  strings(slot) {
    const v = this.vector(slot, 4);
    return v ? Array.from({ length: v.length }, (_, i) => this.stringAt(v.start + 4 * i)) : null;
  }

  /** A [ubyte] vector as a view of the buffer's bytes (no copy), or null. */
  bytes(slot) {
    const v = this.vector(slot, 1);
    return v ? this.bb.bytes().subarray(v.start, v.start + v.length) : null;
  }

  /** A table field (also the value of a union field), or null when absent. */
  table(slot) {
    const p = this.field(slot);
    return p ? new Table(this.bb, this.bb.__indirect(p)) : null;
  }

  /** A vector of tables ([] when absent). */
  tables(slot) {
    const v = this.vector(slot, 4);
    return v ? Array.from({ length: v.length }, (_, i) => new Table(this.bb, this.bb.__indirect(v.start + 4 * i))) : [];
  }
}
