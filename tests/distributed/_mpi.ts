/**
 * Whether the MPI tests can run here: `mpirun` on the PATH and Open MPI's libmpi loadable. Where
 * not, the tests are declared ignored and their names say why (install: apt-get install
 * openmpi-bin libopenmpi-dev, or REFLOW_WITH_MPI=1 bash scripts/setup.sh).
 */
import { mpiUnavailable } from "../../core/distributed/mpi_ffi.ts";

async function probe(): Promise<string | null> {
  try {
    const o = await new Deno.Command("mpirun", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    if (!o.success) return "mpirun --version failed";
  } catch {
    return "mpirun is not on the PATH";
  }
  return mpiUnavailable();
}

/** Why MPI tests cannot run, or null. */
export const MPI_MISSING: string | null = await probe();

if (MPI_MISSING) console.error(`MPI tests skipped: ${MPI_MISSING}`);

/** `Deno.test` options: ignored, with the reason in the name, where MPI is missing. */
export function mpiTest(name: string): { name: string; ignore: boolean } {
  return { name: MPI_MISSING ? `${name} [skipped: ${MPI_MISSING}]` : name, ignore: !!MPI_MISSING };
}

/** `mpirun -np n` of a Deno script, as root where needed, more ranks than cores allowed. */
export function mpirun(n: number, script: string, args: string[]): Deno.Command {
  return new Deno.Command("mpirun", {
    args: [
      "--allow-run-as-root",
      "--oversubscribe",
      "-np",
      String(n),
      Deno.execPath(),
      "run",
      "-A",
      "--no-check",
      script,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}
