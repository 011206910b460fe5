/**
 * Timestamp profiling of kernel launches (`Gpu.profile`): a query pair around each compute pass,
 * resolved at every submit and read back once at the end.
 *
 * @module
 */

/** Timestamp queries around each dispatch, resolved at every submit and read at the end. */
export class Profiler {
  private readonly slots: number;
  private querySet: GPUQuerySet;
  private names: string[] = [];
  private pending: { buffer: GPUBuffer; names: string[] }[] = [];

  /** `dispatches`: the most launches between two submits (two timestamps each). */
  constructor(private readonly device: GPUDevice, dispatches: number) {
    this.slots = 2 * dispatches;
    this.querySet = device.createQuerySet({ type: "timestamp", count: this.slots });
  }

  passTimestamps(name: string): GPUComputePassDescriptor {
    const i = this.names.length;
    this.names.push(name);
    return {
      timestampWrites: {
        querySet: this.querySet,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    };
  }

  resolve(encoder: GPUCommandEncoder): void {
    const n = this.names.length;
    if (n === 0) return;
    const resolved = this.device.createBuffer({
      size: 16 * n,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const read = this.device.createBuffer({
      size: 16 * n,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, read, 0, 16 * n);
    this.pending.push({ buffer: read, names: this.names });
    this.names = [];
  }

  afterSubmit(): void {
    // A fresh query set per submit: the previous one is still being resolved.
    this.querySet = this.device.createQuerySet({ type: "timestamp", count: this.slots });
  }

  async collect(): Promise<Map<string, { ms: number; count: number }>> {
    const out = new Map<string, { ms: number; count: number }>();
    for (const p of this.pending) {
      await p.buffer.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(p.buffer.getMappedRange());
      p.names.forEach((name, i) => {
        const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
        const e = out.get(name) ?? { ms: 0, count: 0 };
        e.ms += Math.max(0, ms);
        e.count++;
        out.set(name, e);
      });
      p.buffer.unmap();
      p.buffer.destroy();
    }
    return out;
  }
}
