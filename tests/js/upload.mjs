#!/usr/bin/env node
// Drives the real @huggingface/hub JS client through a hosted repo's life on an InferLlama node and prints
// ONE JSON line on stdout:
//
//   {"steps": {"<step>": <what it returned>}, "requests": [{method, url, status, bytes}], "failed": null}
//
// Steps, in order: createRepo, createRepoAgain (must fail: the repo exists), uploadFiles (every file under
// --files, paths relative to it), deleteFile (--delete), listCommits, snapshotDownload (into --cache-dir; the
// snapshot's files and their sha256), deleteRepo, repoExistsAfterDelete. The first failing step stops the
// run: "failed" then says which and why, and the exit code is 1.
//
// Usage:
//   node upload.mjs --endpoint URL --token hf_... --repo NS/NAME --files DIR --delete PATH --cache-dir DIR
//
// The client is confined to the endpoint's origin, as in snapshot.mjs: a request (or redirect hop) to any
// other origin fails the run. `bytes` is the size of a PUT's body (a Blob), null otherwise.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

// The client logs with console.debug, which goes to stdout: keep stdout for the result.
for (const name of ["log", "info", "debug", "warn"]) {
	console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

function usage(message) {
	process.stderr.write(
		`upload.mjs: ${message}\nusage: node upload.mjs --endpoint URL --token hf_... --repo NS/NAME --files DIR ` +
			"--delete PATH --cache-dir DIR\n",
	);
	process.exit(2);
}

let opts;
try {
	({ values: opts } = parseArgs({
		options: {
			endpoint: { type: "string" },
			token: { type: "string" },
			repo: { type: "string" },
			files: { type: "string" },
			delete: { type: "string" },
			"cache-dir": { type: "string" },
		},
		strict: true,
		allowPositionals: false,
	}));
} catch (err) {
	usage(err.message);
}
for (const name of ["endpoint", "token", "repo", "files", "delete", "cache-dir"]) {
	if (!opts[name]) usage(`--${name} is required`);
}

const endpoint = new URL(opts.endpoint);
const hubUrl = endpoint.href.replace(/\/+$/, "");
const allowedOrigin = endpoint.origin;
const requests = [];
const MAX_REDIRECTS = 10;

function bodySize(body) {
	if (body instanceof Blob) return body.size;
	if (body instanceof ArrayBuffer) return body.byteLength;
	if (ArrayBuffer.isView(body)) return body.byteLength;
	return null;
}

// fetch() confined to the endpoint's origin, following redirects by hand so that every hop is checked.
async function confinedFetch(input, init = {}) {
	let url = input instanceof Request ? input.url : String(input);
	let method = (init.method ?? (input instanceof Request ? input.method : undefined) ?? "GET").toUpperCase();
	let currentInit = { ...init, method, redirect: "manual" };
	let request = input instanceof Request ? input : undefined;
	for (let hop = 0; ; hop++) {
		const target = new URL(url);
		const entry = { method, url: target.pathname + target.search, status: null, bytes: bodySize(currentInit.body) };
		requests.push(entry);
		if (target.origin !== allowedOrigin) {
			entry.status = "REFUSED";
			throw new Error(`upload.mjs: refused a request outside the endpoint: ${method} ${target.href}`);
		}
		const resp = await fetch(request ?? target.href, currentInit);
		request = undefined;
		entry.status = resp.status;
		const location = resp.headers.get("location");
		if (![301, 302, 303, 307, 308].includes(resp.status) || !location) {
			return resp;
		}
		await resp.body?.cancel();
		if (hop >= MAX_REDIRECTS) throw new Error(`upload.mjs: too many redirects from ${url}`);
		url = new URL(location, target).href;
		if (resp.status === 303 || ((resp.status === 301 || resp.status === 302) && method === "POST")) {
			method = "GET";
			const { body: _body, ...rest } = currentInit;
			currentInit = { ...rest, method };
		}
	}
}

async function sha256File(path) {
	const hash = createHash("sha256");
	for await (const chunk of createReadStream(path)) hash.update(chunk);
	return hash.digest("hex");
}

// Relative path ("/"-separated) -> absolute path of every regular file under `root`, following symlinks.
async function listTree(root, rel = "", out = {}) {
	const entries = await readdir(join(root, rel));
	entries.sort();
	for (const name of entries) {
		const relPath = rel ? `${rel}/${name}` : name;
		const st = await stat(join(root, relPath));
		if (st.isDirectory()) await listTree(root, relPath, out);
		else if (st.isFile()) out[relPath] = join(root, relPath);
		else throw new Error(`unexpected non-regular file: ${relPath}`);
	}
	return out;
}

function describeError(err) {
	// undici's "fetch failed" says why only in its cause (a reset connection, a refused one...).
	const causes = [];
	for (let c = err?.cause; c && causes.length < 5; c = c.cause) causes.push(`${c.name ?? "Error"}: ${c.message ?? c}`);
	return {
		message: [String(err?.message ?? err), ...causes].join("\n  caused by: "),
		status: err?.statusCode ?? null,
		name: err?.name ?? null,
		stack: err?.stack ?? null,
	};
}

async function main() {
	const hub = await import("@huggingface/hub");
	const repo = { type: "model", name: opts.repo };
	const common = { repo, hubUrl, accessToken: opts.token, fetch: confinedFetch };
	const steps = {};
	let failed = null;

	async function step(name, body) {
		if (failed) return;
		try {
			steps[name] = (await body()) ?? null;
		} catch (err) {
			failed = { step: name, ...describeError(err) };
		}
	}

	await step("createRepo", async () => hub.createRepo(common));
	await step("createRepoAgain", async () => {
		try {
			await hub.createRepo(common);
		} catch (err) {
			return { refused: true, status: err?.statusCode ?? null, message: String(err?.message ?? err) };
		}
		throw new Error("creating an existing repo succeeded");
	});
	await step("uploadFiles", async () => {
		const local = await listTree(opts.files);
		const out = await hub.uploadFiles({
			...common,
			files: Object.entries(local).map(([path, abs]) => ({ path, content: pathToFileURL(abs) })),
		});
		return { commit: out?.commit ?? null, pullRequestUrl: out?.pullRequestUrl ?? null, files: Object.keys(local) };
	});
	await step("deleteFile", async () => {
		const out = await hub.deleteFile({ ...common, path: opts.delete });
		return { commit: out?.commit ?? null };
	});
	await step("listCommits", async () => {
		const commits = [];
		for await (const c of hub.listCommits(common)) {
			commits.push({ oid: c.oid, title: c.title, message: c.message, authors: c.authors, date: c.date });
		}
		return commits;
	});
	await step("snapshotDownload", async () => {
		const snapshot = await hub.snapshotDownload({ ...common, cacheDir: opts["cache-dir"] });
		const files = {};
		for (const [path, abs] of Object.entries(await listTree(snapshot))) files[path] = await sha256File(abs);
		return { snapshot, files };
	});
	await step("deleteRepo", async () => {
		await hub.deleteRepo(common);
		return { deleted: true };
	});
	await step("repoExistsAfterDelete", async () => hub.repoExists(common));

	process.stdout.write(JSON.stringify({ steps, requests, failed }) + "\n");
	return failed ? 1 : 0;
}

main().then(
	(code) => process.exit(code),
	(err) => {
		process.stderr.write(`upload.mjs: ${err?.stack ?? err}\n`);
		process.exit(1);
	},
);
