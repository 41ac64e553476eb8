#!/usr/bin/env node
// Downloads one repository snapshot with the real @huggingface/hub JS client (`snapshotDownload`)
// from an InferLlama node (or any Hub-compatible endpoint) and prints ONE JSON line on stdout:
//
//   {"snapshot": "<path>", "files": {"<relative path>": "<sha256 hex>"}, "requests": [...]}
//
// `files` walks the returned snapshot folder (following the cache's symlinks); `requests` lists
// every HTTP request the client made ("METHOD URL -> STATUS"), for diagnostics.
//
// Usage:
//   node snapshot.mjs --endpoint URL --repo NAME [--type model|dataset|space] [--revision REV]
//                     [--token T] --cache-dir DIR
//
// The client is confined to the endpoint's origin: every request (and every redirect hop, which
// this script follows itself) to any other origin is refused, so it can never reach the real
// Hub, a CDN or a Xet host. A refused request makes the download fail (non-zero exit, message on
// stderr). Exit codes: 0 ok, 1 download/verification failure, 2 usage error.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";

// The client logs progress with console.debug, which goes to stdout: keep stdout for the result.
for (const name of ["log", "info", "debug", "warn"]) {
	console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

function usage(message) {
	process.stderr.write(
		`snapshot.mjs: ${message}\n` +
			"usage: node snapshot.mjs --endpoint URL --repo NAME [--type model|dataset|space] " +
			"[--revision REV] [--token T] --cache-dir DIR\n",
	);
	process.exit(2);
}

let opts;
try {
	({ values: opts } = parseArgs({
		options: {
			endpoint: { type: "string" },
			repo: { type: "string" },
			type: { type: "string", default: "model" },
			revision: { type: "string" },
			token: { type: "string" },
			"cache-dir": { type: "string" },
		},
		strict: true,
		allowPositionals: false,
	}));
} catch (err) {
	usage(err.message);
}
if (!opts.endpoint) usage("--endpoint is required");
if (!opts.repo) usage("--repo is required");
if (!opts["cache-dir"]) usage("--cache-dir is required");
if (!["model", "dataset", "space"].includes(opts.type)) usage(`bad --type ${opts.type}`);

let endpoint;
try {
	endpoint = new URL(opts.endpoint);
} catch {
	usage(`bad --endpoint ${opts.endpoint}`);
}
const hubUrl = endpoint.href.replace(/\/+$/, "");
const allowedOrigin = endpoint.origin;

const requests = [];
const MAX_REDIRECTS = 10;

function describe(input) {
	if (input instanceof Request) return { url: input.url, method: input.method };
	return { url: String(input), method: undefined };
}

// fetch() confined to the endpoint's origin, following redirects by hand so that every hop is
// checked too (the built-in redirect handling would silently follow one to another host).
async function confinedFetch(input, init = {}) {
	let { url, method } = describe(input);
	method = (init.method ?? method ?? "GET").toUpperCase();
	let currentInit = { ...init, method, redirect: "manual" };
	let request = input instanceof Request ? input : undefined;
	for (let hop = 0; ; hop++) {
		const target = new URL(url);
		if (target.origin !== allowedOrigin) {
			const line = `${method} ${target.href} -> REFUSED (not ${allowedOrigin})`;
			requests.push(line);
			throw new Error(`snapshot.mjs: refused a request outside the endpoint: ${line}`);
		}
		const resp = await fetch(request ?? target.href, currentInit);
		request = undefined;
		requests.push(`${method} ${target.href} -> ${resp.status}`);
		const location = resp.headers.get("location");
		if (![301, 302, 303, 307, 308].includes(resp.status) || !location) {
			return resp;
		}
		await resp.body?.cancel();
		if (hop >= MAX_REDIRECTS) {
			throw new Error(`snapshot.mjs: too many redirects from ${describe(input).url}`);
		}
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

// Relative path ("/"-separated) -> sha256 of every regular file under `root`, following symlinks.
async function walk(root, rel = "", out = {}) {
	const entries = await readdir(join(root, rel));
	entries.sort();
	for (const name of entries) {
		const relPath = rel ? `${rel}/${name}` : name;
		const st = await stat(join(root, relPath)); // follows symlinks; a dangling one throws
		if (st.isDirectory()) {
			await walk(root, relPath, out);
		} else if (st.isFile()) {
			out[relPath] = await sha256File(join(root, relPath));
		} else {
			throw new Error(`unexpected non-regular file in snapshot: ${relPath}`);
		}
	}
	return out;
}

async function main() {
	// Load the client only after console is redirected.
	const { snapshotDownload } = await import("@huggingface/hub");
	const params = {
		repo: { type: opts.type, name: opts.repo },
		hubUrl,
		cacheDir: opts["cache-dir"],
		fetch: confinedFetch,
	};
	if (opts.revision) params.revision = opts.revision;
	if (opts.token) params.accessToken = opts.token;

	const snapshot = await snapshotDownload(params);
	const files = await walk(snapshot);
	process.stdout.write(JSON.stringify({ snapshot, files, requests }) + "\n");
}

main().then(
	() => process.exit(0),
	(err) => {
		const status = err?.statusCode ? ` (HTTP ${err.statusCode})` : "";
		process.stderr.write(`snapshot.mjs: download of ${opts.type} ${opts.repo} failed${status}: ${err?.stack ?? err}\n`);
		process.stderr.write(`snapshot.mjs: requests made:\n${requests.map((r) => `  ${r}`).join("\n")}\n`);
		process.exit(1);
	},
);
