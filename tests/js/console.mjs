// The web console in a real headless Chromium (Debian's, driven by playwright-core), one person's whole
// journey: sign up -> confirm the address from the mail -> sign in -> create a key -> use it with the
// Python client -> see the usage -> upload a model in the browser -> download it with the Python client ->
// change the user name (the model and the key follow) -> export the data -> delete the account. Then an
// operator's pages, with the swarms and their peers. Screenshots of the main pages go to
// --shots. Prints one JSON line of what it saw; any failed expectation throws (exit 1).
//
// Used by tests/integration/test_console_browser.py, which starts the SMTP server, the fake Hub and the node.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => {
  if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
  return pairs;
}, []));
const base = args.url;
let user = args.user;  // until the profile page renames them
const email = `${user}@example.org`;
const password = 'a long enough passphrase';
const seen = { screenshots: [] };

function expect(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}

async function until(probe, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => { setTimeout(resolve, 100); });  // polling the mailbox, bounded
  }
}

// The console link in the newest mail to `to` that holds one to `route`.
function mailedToken(to, route) {
  const found = [];
  for (const folder of ['new', 'cur']) {
    const dir = path.join(args.maildir, folder);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const text = fs.readFileSync(path.join(dir, name), 'utf8');
      const match = text.match(new RegExp(`#/${route}\\?token=([A-Za-z0-9_-]+)`));
      if (match && text.includes(`<${to}>`)) found.push(match[1]);
    }
  }
  return found.at(-1);
}

// The Python client (huggingface_hub) downloading one file through the node with the key.
function pythonDownload(key, repo, file) {
  const script = 'import sys, hashlib\nfrom huggingface_hub import hf_hub_download\n' +
    'p = hf_hub_download(sys.argv[1], sys.argv[2], token=sys.argv[3])\n' +
    'print(hashlib.sha256(open(p, "rb").read()).hexdigest())\n';
  const env = { PATH: process.env.PATH, HOME: args.work, HF_ENDPOINT: base, HF_HOME: path.join(args.work, `hf-${Date.now()}`),
    HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_XET: '1' };
  return execFileSync(args.python, ['-c', script, repo, file, key], { env, encoding: 'utf8' }).trim();
}

async function shot(page, name) {
  const file = path.join(args.shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  seen.screenshots.push(file);
}

// Every page fits a phone's width: no horizontal scrolling at 375 px.
async function fitsAPhone(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
}

// Every form control has a label a screen reader announces.
async function unlabelledControls(page) {
  return page.evaluate(() => [...document.querySelectorAll('input, select')]
    .filter((e) => e.type !== 'hidden' && e.labels.length === 0).map((e) => e.name || e.type));
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // A CSP violation (an inline script or style, a foreign origin) is logged as a console error.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('status of 401')) problems.push(`${m.text()} (${m.location().url})`);
  });

  // Sign up.
  await page.goto(`${base}/#/sign-up`);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await shot(page, 'sign-up');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Check your email' }).waitFor();

  // The mailed link confirms the address.
  const verify = await until(() => mailedToken(email, 'verify'), 'the confirmation mail');
  await page.goto(`${base}/#/verify?token=${verify}`);
  await page.getByText('is confirmed').waitFor();

  // Sign in: exactly the two cookies, with the policy's flags.
  await page.goto(`${base}/#/sign-in`);
  expect((await unlabelledControls(page)).length === 0, 'labelled sign-in fields');
  await page.getByLabel('User name or email').fill(user);
  await page.getByLabel('Password').fill(password);
  await shot(page, 'sign-in');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  const cookies = await context.cookies();
  seen.cookies = cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure }))
    .sort((a, b) => a.name.localeCompare(b.name));
  expect(cookies.length === 2, 'two cookies');
  expect(cookies.find((c) => c.name === 'inferllama_session').httpOnly, 'an HttpOnly session cookie');
  expect(!cookies.find((c) => c.name === 'inferllama_csrf').httpOnly, 'a CSRF cookie JavaScript can read');
  expect(await page.evaluate(() => !document.cookie.includes('inferllama_session')), 'the session cookie hidden from scripts');
  await shot(page, 'profile');

  // From the top of the page, the keyboard reaches the skip link first.
  await page.reload();
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.classList.contains('skip')), 'the skip link focused first');

  // A key, used with the Python client.
  await page.goto(`${base}/#/keys`);
  await page.getByLabel('Label').fill('laptop');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = (await page.locator('#new-key').textContent()).trim();
  expect(key.startsWith('il_'), 'a node key shown once');
  await shot(page, 'keys');
  seen.hub_file_sha256 = pythonDownload(key, args.model, args.file);

  // The usage page counts that request.
  await until(async () => {
    await page.goto(`${base}/#/usage?t=${Date.now()}`);
    await page.locator('#total-requests').waitFor();
    return Number(await page.locator('#total-requests').textContent()) >= 1;
  }, 'the request in the usage page');
  expect(await page.locator('svg.chart rect.bar').count() >= 89, 'a bar per day for 90 days');
  await shot(page, 'usage');

  // A model made and uploaded to in the browser, downloaded with the Python client.
  await page.goto(`${base}/#/models`);
  await page.getByLabel('Name').fill('browser-model');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: `${user}/browser-model` }).waitFor();
  const weights = path.join(args.work, 'weights.bin');
  fs.writeFileSync(weights, Buffer.concat([Buffer.alloc(16), randomBytes(3 * 1024 * 1024)]));  // NUL bytes: LFS
  await page.locator('#upload-file').setInputFiles(weights);
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.getByText('weights.bin uploaded').waitFor({ timeout: 60000 });
  await page.getByRole('link', { name: 'weights.bin' }).waitFor();
  await shot(page, 'model');
  const uploaded = createHash('sha256').update(fs.readFileSync(weights)).digest('hex');
  seen.uploaded_sha256 = uploaded;
  seen.downloaded_sha256 = pythonDownload(key, `${user}/browser-model`, 'weights.bin');
  expect(seen.downloaded_sha256 === uploaded, 'the browser upload downloads bit for bit');

  // A new user name on the profile page: the model and the key follow, the old name's model is gone.
  const renamed = `${user}-renamed`;
  await page.goto(`${base}/#/profile`);
  await page.getByLabel('New user name').fill(renamed);
  await page.locator('form[aria-label="Change user name"]').getByLabel('Your password').fill(password);
  await page.getByRole('button', { name: 'Change user name' }).click();
  await page.getByText(`Your user name is ${renamed} now.`).waitFor();
  expect((await page.locator('table').first().textContent()).includes(renamed), 'the profile shows the new name');
  let oldNameRefused = false;
  try {
    pythonDownload(key, `${user}/browser-model`, 'weights.bin');
  } catch {
    oldNameRefused = true;
  }
  seen.old_name_refused = oldNameRefused;
  user = renamed;
  seen.renamed_sha256 = pythonDownload(key, `${user}/browser-model`, 'weights.bin');
  expect(seen.renamed_sha256 === uploaded, 'the renamed model downloads bit for bit');

  await page.goto(`${base}/#/torrents`);
  await page.getByText('Private announce URL').waitFor();
  await shot(page, 'torrents');

  // On a phone: every page without horizontal scrolling.
  await page.setViewportSize({ width: 375, height: 800 });
  seen.too_wide = [];
  for (const route of ['profile', 'keys', 'usage', 'models', `model?repo=${user}%2Fbrowser-model`, 'torrents', 'settings']) {
    await page.goto(`${base}/#/${route}`);
    await page.locator('h1').waitFor();
    if (!(await fitsAPhone(page))) seen.too_wide.push(route);
    if ((await unlabelledControls(page)).length) seen.too_wide.push(`${route}: unlabelled`);
  }
  expect(seen.too_wide.length === 0, `pages that fit a phone, labelled (${seen.too_wide})`);
  await shot(page, 'phone-settings');
  await page.setViewportSize({ width: 1200, height: 900 });

  // Export, then Settings -> Danger Zone -> Delete Account.
  await page.goto(`${base}/#/settings`);
  await shot(page, 'settings');
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export my data' }).click()]);
  const exported = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  seen.export = { user: exported.user && exported.user.name, sections: Object.keys(exported).sort() };
  expect(seen.export.user === user, 'the export names the user');
  await page.getByLabel('Your password').fill(password);
  await page.getByRole('button', { name: 'Delete Account' }).click();
  await page.getByRole('heading', { name: 'Account deleted' }).waitFor();
  seen.after_delete_cookies = (await context.cookies()).length;
  let refused = false;
  try {
    pythonDownload(key, args.model, args.file);
  } catch {
    refused = true;
  }
  seen.key_refused_after_delete = refused;
  seen.problems = problems;
  expect(problems.length === 0, `no page errors or CSP violations (${problems})`);

  // An operator's pages.
  const operator = await (await browser.newContext({ viewport: { width: 1200, height: 900 } })).newPage();
  await operator.goto(`${base}/#/sign-in`);
  await operator.getByLabel('User name or email').fill(args.operator);
  await operator.getByLabel('Password').fill(args['operator-password']);
  await operator.getByRole('button', { name: 'Sign in' }).click();
  await operator.getByRole('heading', { name: 'Profile' }).waitFor();
  await operator.goto(`${base}/#/operator`);
  await operator.getByRole('heading', { name: 'Cache' }).waitFor();
  seen.operator_repos = await operator.locator('table').first().locator('tbody tr').count();
  await operator.getByRole('heading', { name: 'Swarms and peers' }).waitFor();
  const swarms = operator.locator('.swarms details');
  seen.operator_swarms = await swarms.count();
  if (seen.operator_swarms) {
    await swarms.first().locator('summary').click();
    seen.operator_peers = await swarms.first().locator('tbody tr').count();
  }
  await shot(operator, 'operator');
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
