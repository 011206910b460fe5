import assert from "node:assert/strict";
import {
  CliError,
  type CommandSpec,
  formatHelp,
  intArg,
  numberArg,
  parseCommand,
  parseJobArgs,
} from "../../core/config/cli.ts";

const spec: CommandSpec = {
  name: "tool",
  description: "A test command.",
  options: [
    { flags: "--out <dir>", description: "output folder", default: "out" },
    { flags: "--steps <n>", description: "steps" },
    { flags: "--batch-size <n>", description: "batch" },
    { flags: "--quick", description: "small", default: false },
    { flags: "--jobs", description: "jobs on" },
    { flags: "--no-jobs", description: "jobs off" },
    { flags: "--no-color", description: "plain output" },
    { flags: "--prompt <text>", description: "a caption", repeatable: true },
  ],
  exitOnError: false,
};

Deno.test("parseCommand: values, switches, negation, repeatable, defaults and keys", () => {
  assert.deepEqual(parseCommand([], spec), { out: "out", quick: false, color: true, prompt: [] });
  const o = parseCommand([
    "--out=a=b",
    "--steps",
    "-3",
    "--batch-size",
    "4",
    "--quick",
    "--no-jobs",
    "--no-color",
    "--prompt",
    "a cat",
    "--prompt=",
  ], spec);
  assert.deepEqual(o, {
    out: "a=b",
    steps: "-3",
    batchSize: "4",
    quick: true,
    jobs: false,
    color: false,
    prompt: ["a cat", ""],
  });
  assert.equal(parseCommand<{ jobs?: boolean }>(["--jobs"], spec).jobs, true);
  // The last of a plain option wins; a trailing "--" is harmless.
  assert.equal(parseCommand<{ out: string }>(["--out", "x", "--out", "y", "--"], spec).out, "y");
});

Deno.test("parseCommand: errors name the flag", () => {
  const bad: [string[], RegExp][] = [
    [["--step", "3"], /^tool: unknown option '--step' \(Did you mean --steps\?\)/],
    [["-x"], /unknown option '-x'/],
    [["--steps"], /tool: --steps needs a value \(--steps <n>\)/],
    [["--quick=yes"], /unknown option '--quick=yes'/],
    [["stray"], /too many arguments/],
    [["--", "stray"], /too many arguments/],
  ];
  // An option's value is the next argument even when it starts with "--" (commander's rule).
  assert.equal(parseCommand<{ steps: string }>(["--steps", "--quick"], spec).steps, "--quick");
  for (const [argv, re] of bad) {
    assert.throws(() => parseCommand(argv, spec), (e) => {
      assert.ok(e instanceof CliError && e.exitCode === 1, String(e));
      assert.match(e.message, re);
      return true;
    });
  }
  const required: CommandSpec = {
    name: "req",
    options: [{ flags: "--dpath <dir>", description: "", required: true }],
    exitOnError: false,
  };
  assert.throws(() => parseCommand([], required), /req: required option '--dpath <dir>'/);
});

Deno.test("parseCommand: --help gives the help text, which lists every option", () => {
  for (const h of ["--help", "-h"]) {
    assert.throws(() => parseCommand(["--steps", "1", h], spec), (e) => {
      assert.ok(e instanceof CliError && e.exitCode === 0);
      assert.equal(e.message, formatHelp(spec));
      return true;
    });
  }
  const help = formatHelp(spec);
  assert.match(help, /^Usage: tool \[options\]\n\nA test command\.\n\nOptions:\n/);
  assert.match(help, /--out <dir> +output folder \(default: "out"\)/);
  assert.match(help, /--prompt <text> +a caption \(repeatable\)/);
  assert.match(help, /-h, --help +display help for command/);
  for (const line of help.split("\n")) assert.ok(line.length <= 100, line);
});

Deno.test("intArg / numberArg: ranges, and messages that name the flag", () => {
  assert.equal(intArg("7", "--n", { min: 1 }), 7);
  assert.equal(intArg("0", "--port", { min: 0, max: 65535 }), 0);
  assert.throws(() => intArg("0", "--n", { min: 1 }), /--n must be an integer >= 1, got "0"/);
  assert.throws(() => intArg("1.5", "--n"), /--n must be an integer, got "1\.5"/);
  assert.throws(() => intArg("", "--n"), /--n must be an integer/);
  assert.throws(
    () => intArg("70000", "--port", { min: 0, max: 65535 }),
    /--port must be an integer in \[0, 65535\], got "70000"/,
  );
  assert.equal(numberArg("1e-3", "--lr", { min: 0, minExclusive: true }), 1e-3);
  assert.equal(numberArg("0", "--sigma_var", { min: 0 }), 0);
  assert.throws(
    () => numberArg("0", "--lr", { min: 0, minExclusive: true }),
    /--lr must be a number > 0, got "0"/,
  );
  assert.throws(() => numberArg("inf", "--x"), /--x must be a finite number/);
  assert.throws(() => numberArg(undefined, "--x", { min: 0 }), /got "undefined"/);
});

Deno.test("parseJobArgs: job options beside overrides, repeatable and camelCase keys", () => {
  const args = parseJobArgs([
    "--eval_folder",
    "out/a",
    "--config.sampling.sample_N=2",
    "--prompt",
    "a cat",
    "--world-size",
    "2",
    "--prompt=a dog",
  ], {
    name: "sample",
    defaultConfig: "configs/sample.ts",
    options: [
      { flags: "--eval_folder <dir>", description: "", required: true },
      { flags: "--prompt <text>", description: "", repeatable: true },
      { flags: "--world-size <n>", description: "" },
    ],
    exitOnError: false,
  });
  assert.equal(args.config, "configs/sample.ts");
  assert.deepEqual(args.options, {
    eval_folder: "out/a",
    prompt: ["a cat", "a dog"],
    worldSize: "2",
  });
  assert.deepEqual(args.overrides, [{ key: "sampling.sample_N", value: "2" }]);
  assert.throws(
    () => parseJobArgs(["--help"], { name: "train", exitOnError: false }),
    /Usage: deno task train \[options\][\s\S]*--config <file>[\s\S]*Config overrides:/,
  );
});
