// What the browser test scripts share: Chromium's flags and a named check that reports
// ok / FAIL with its time and counts failures instead of stopping at the first. CHECK=text runs only
// the checks whose names contain text (while working on one).

export const FLAGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let failed = 0;
let ran = 0;
let leftOut = 0;

export async function check(name, fn) {
  if (process.env.CHECK && !name.includes(process.env.CHECK)) {
    leftOut++;
    return;
  }
  ran++;
  const started = performance.now();
  const took = () => `(${((performance.now() - started) / 1000).toFixed(1)} s)`;
  try {
    await fn();
    console.log(`ok   ${name} ${took()}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name} ${took()}\n     ${err.stack ?? err}`);
  }
}

/**
 * Prints the summary (how many checks ran, and how many CHECK= left out) and exits with
 * 1 if any check failed or CHECK= matched none.
 */
export function finish(what) {
  const filter = leftOut ? ` (${leftOut} left out by CHECK=${process.env.CHECK})` : '';
  if (!ran) {
    console.log(`no ${what} check ran${filter}`);
    process.exit(1);
  }
  console.log(failed ? `${failed} of ${ran} ${what} checks FAILED${filter}` : `all ${ran} ${what} checks passed${filter}`);
  process.exit(failed ? 1 : 0);
}
