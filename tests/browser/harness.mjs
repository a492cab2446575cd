// What the browser test scripts share: Chromium's flags and a named check that reports
// ok / FAIL and counts failures instead of stopping at the first. CHECK=text runs only
// the checks whose names contain text (while working on one).

export const FLAGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let failed = 0;

export async function check(name, fn) {
  if (process.env.CHECK && !name.includes(process.env.CHECK)) return;
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}\n     ${err.stack ?? err}`);
  }
}

/** Prints the summary and exits with 1 if any check failed. */
export function finish(what) {
  console.log(failed ? `${failed} ${what} test(s) FAILED` : `all ${what} tests passed`);
  process.exit(failed ? 1 : 0);
}
