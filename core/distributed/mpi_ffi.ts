/**
 * Open MPI through Deno's FFI: the few calls the gradient exchange needs, on host buffers.
 *
 * Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM...) are addresses of global objects in
 * libmpi (`ompi_mpi_comm_world`...), found with libc's dlsym; MPI_IN_PLACE is `(void *) 1`. The
 * library is first opened with RTLD_GLOBAL, as Open MPI's plugins need its symbols. Collectives
 * are `nonblocking` FFI calls: they run on a thread of Deno's pool while the event loop goes on
 * (a watchdog timer can then fire), so MPI is initialised with MPI_THREAD_MULTIPLE and calls are
 * serialised by the caller. Errors return (MPI_ERRORS_RETURN) and are thrown with MPI's message.
 *
 * Only Open MPI's ABI is bound (Debian's openmpi-bin/libopenmpi-dev, most clusters); MPICH and
 * Intel MPI use another one and are refused with that message.
 *
 * @module
 */

const RTLD_NOW = 2;
const RTLD_GLOBAL = 0x100;
/** MPI_THREAD_MULTIPLE in Open MPI's enum (SINGLE, FUNNELED, SERIALIZED, MULTIPLE). */
const THREAD_MULTIPLE = 3;
const THREAD_SERIALIZED = 2;
/** Elements per call: MPI counts are C ints. */
export const MAX_COUNT = 1 << 28;

const cstr = (s: string) => new TextEncoder().encode(s + "\0");

const SYMBOLS = {
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Comm_split_type: {
    parameters: ["pointer", "i32", "i32", "pointer", "buffer"],
    result: "i32",
  },
  MPI_Comm_free: { parameters: ["buffer"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "pointer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: {
    parameters: ["pointer", "i32", "pointer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Sendrecv: {
    parameters: [
      "pointer", // sendbuf
      "i32", // sendcount
      "pointer", // sendtype
      "i32", // dest
      "i32", // sendtag
      "pointer", // recvbuf
      "i32", // recvcount
      "pointer", // recvtype
      "i32", // source
      "i32", // recvtag
      "pointer", // comm
      "pointer", // status
    ],
    result: "i32",
    nonblocking: true,
  },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;
type Ptr = Deno.PointerValue;

/** Where libmpi is looked for: REFLOW_MPI_LIB, then Open MPI's sonames. */
export function mpiLibraryCandidates(): string[] {
  const env = Deno.env.get("REFLOW_MPI_LIB");
  return env ? [env] : ["libmpi.so.40", "libmpi.so"];
}

/** Why MPI cannot be used here, or null when Open MPI's libmpi loads (for tests and errors). */
export function mpiUnavailable(): string | null {
  try {
    openLibmpi();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

let libc:
  | Deno.DynamicLibrary<{
    dlopen: { parameters: ["buffer", "i32"]; result: "pointer" };
    dlsym: { parameters: ["pointer", "buffer"]; result: "pointer" };
  }>
  | null = null;

function openLibmpi(): { lib: Lib; sym: (name: string) => Ptr; path: string } {
  libc ??= Deno.dlopen("libc.so.6", {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  });
  const tried: string[] = [];
  for (const path of mpiLibraryCandidates()) {
    const handle = libc.symbols.dlopen(cstr(path), RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
      tried.push(path);
      continue;
    }
    const sym = (name: string) => libc!.symbols.dlsym(handle, cstr(name));
    if (!sym("ompi_mpi_comm_world")) {
      throw new Error(
        `${path} is not Open MPI's libmpi (no ompi_mpi_comm_world): MPICH and Intel MPI are not ` +
          `supported; install Open MPI (apt-get install openmpi-bin libopenmpi-dev) or set ` +
          `REFLOW_MPI_LIB to Open MPI's libmpi.so`,
      );
    }
    return { lib: Deno.dlopen(path, SYMBOLS), sym, path };
  }
  throw new Error(
    `MPI is not installed: cannot load ${tried.join(" or ")} (Open MPI: apt-get install ` +
      `openmpi-bin libopenmpi-dev, or REFLOW_WITH_MPI=1 bash scripts/setup.sh; or set ` +
      `REFLOW_MPI_LIB to its libmpi.so)`,
  );
}

/** An initialised MPI (one per process). */
export class Mpi {
  readonly rank: number;
  readonly size: number;
  readonly version: string;
  private readonly world: Ptr;
  private readonly float: Ptr;
  private readonly byte: Ptr;
  private readonly sum: Ptr;
  private finalized = false;

  private constructor(private readonly lib: Lib, private readonly sym: (name: string) => Ptr) {
    this.world = sym("ompi_mpi_comm_world");
    this.float = sym("ompi_mpi_float");
    this.byte = sym("ompi_mpi_byte");
    this.sum = sym("ompi_mpi_op_sum");
    const provided = new Int32Array(1);
    this.check(
      lib.symbols.MPI_Init_thread(null, null, THREAD_MULTIPLE, provided),
      "MPI_Init_thread",
    );
    if (provided[0] < THREAD_SERIALIZED) {
      throw new Error(
        `this MPI gives thread level ${provided[0]}; calls from Deno's thread pool need ` +
          `MPI_THREAD_SERIALIZED or more`,
      );
    }
    this.check(
      lib.symbols.MPI_Comm_set_errhandler(this.world, sym("ompi_mpi_errors_return")),
      "MPI_Comm_set_errhandler",
    );
    const v = new Int32Array(1);
    this.check(lib.symbols.MPI_Comm_rank(this.world, v), "MPI_Comm_rank");
    this.rank = v[0];
    this.check(lib.symbols.MPI_Comm_size(this.world, v), "MPI_Comm_size");
    this.size = v[0];
    const text = new Uint8Array(8192);
    this.check(lib.symbols.MPI_Get_library_version(text, v), "MPI_Get_library_version");
    this.version = new TextDecoder().decode(text.subarray(0, v[0])).split("\n")[0]
      .replace(/\0/g, "").trim();
  }

  /** Loads libmpi and runs MPI_Init_thread (once per process). */
  static init(): Mpi {
    const { lib, sym } = openLibmpi();
    const flag = new Int32Array(1);
    lib.symbols.MPI_Initialized(flag);
    if (flag[0]) throw new Error("MPI is already initialised in this process");
    return new Mpi(lib, sym);
  }

  private errorText(code: number): string {
    const buf = new Uint8Array(512);
    const len = new Int32Array(1);
    if (this.lib.symbols.MPI_Error_string(code, buf, len) !== 0) return `MPI error ${code}`;
    return new TextDecoder().decode(buf.subarray(0, len[0]));
  }

  private check(rc: number, what: string): void {
    if (rc !== 0) throw new Error(`${what} failed: ${this.errorText(rc)} (code ${rc})`);
  }

  /** This rank among the ranks sharing its machine (MPI_COMM_TYPE_SHARED). */
  localRank(): { rank: number; size: number } {
    const comm = new BigUint64Array(1);
    this.check(
      this.lib.symbols.MPI_Comm_split_type(this.world, 0, 0, this.sym("ompi_mpi_info_null"), comm),
      "MPI_Comm_split_type",
    );
    const handle = Deno.UnsafePointer.create(comm[0]);
    const v = new Int32Array(2);
    this.check(this.lib.symbols.MPI_Comm_rank(handle, v.subarray(0, 1)), "MPI_Comm_rank");
    this.check(this.lib.symbols.MPI_Comm_size(handle, v.subarray(1, 2)), "MPI_Comm_size");
    this.lib.symbols.MPI_Comm_free(comm);
    return { rank: v[0], size: v[1] };
  }

  /** Sums `buf` over all ranks, in place (MPI_Allreduce with MPI_IN_PLACE). */
  async allreduceSum(buf: Float32Array): Promise<void> {
    for (let off = 0; off < buf.length; off += MAX_COUNT) {
      const part = buf.subarray(off, Math.min(buf.length, off + MAX_COUNT));
      const rc = await this.lib.symbols.MPI_Allreduce(
        Deno.UnsafePointer.create(1n),
        Deno.UnsafePointer.of(part),
        part.length,
        this.float,
        this.sum,
        this.world,
      );
      this.check(rc, "MPI_Allreduce");
    }
  }

  /** Root's bytes into `buf` on every rank. */
  async bcast(buf: Uint8Array, root = 0): Promise<void> {
    for (let off = 0; off < buf.length; off += MAX_COUNT) {
      const part = buf.subarray(off, Math.min(buf.length, off + MAX_COUNT));
      const rc = await this.lib.symbols.MPI_Bcast(
        Deno.UnsafePointer.of(part),
        part.length,
        this.byte,
        root,
        this.world,
      );
      this.check(rc, "MPI_Bcast");
    }
  }

  /** Sends `send` to `dest` while receiving `recv` from `source` (bytes). */
  async sendrecv(send: Uint8Array, dest: number, recv: Uint8Array, source: number): Promise<void> {
    const step = MAX_COUNT;
    const n = Math.max(send.length, recv.length);
    for (let off = 0; off < n || off === 0; off += step) {
      const s = send.subarray(Math.min(off, send.length), Math.min(send.length, off + step));
      const r = recv.subarray(Math.min(off, recv.length), Math.min(recv.length, off + step));
      const rc = await this.lib.symbols.MPI_Sendrecv(
        Deno.UnsafePointer.of(s),
        s.length,
        this.byte,
        dest,
        17,
        Deno.UnsafePointer.of(r),
        r.length,
        this.byte,
        source,
        17,
        this.world,
        null,
      );
      this.check(rc, "MPI_Sendrecv");
      if (n === 0) break;
    }
  }

  async barrier(): Promise<void> {
    this.check(await this.lib.symbols.MPI_Barrier(this.world), "MPI_Barrier");
  }

  /** Ends every rank of the job (the launcher kills the others). Does not return normally. */
  abort(code: number): void {
    this.lib.symbols.MPI_Abort(this.world, code);
  }

  finalize(): void {
    if (this.finalized) return;
    this.finalized = true;
    this.check(this.lib.symbols.MPI_Finalize(), "MPI_Finalize");
  }
}
