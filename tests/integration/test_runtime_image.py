"""The Docker image's runtime stage, checked without a Docker engine.

The test reads the Dockerfile's last stage and rebuilds its files in an empty root folder: apt resolves the
packages the stage installs (those it names, and the list the build stage derives from the binary with
scripts/runtime-packages.sh) with their dependencies, downloads them and they are unpacked; the files the
stage copies from the build stage go where it copies them (the binary under test for build/inferllama);
the data volume is made as the stage makes it. The node then runs there under chroot (unshare as non-root)
with the stage's USER, ENV and ENTRYPOINT: `--version`, `serve --help`, and `serve` answering from the
fake Hub and storing in the volume.

The root holds only those packages, not the rest of debian:12-slim: stricter than the image, a library
the stage misses cannot hide in the base. Not exercised: maintainer scripts (no CA bundle is generated,
no user is added), hence no TLS to a real Hub; the image's build itself needs a Docker engine.

Environment:
  TEST_INFERLLAMA_BINARY  the node binary (see harness.py)
  TEST_APT_CACHE_DIR      apt's package lists and downloaded .debs, kept between runs (default:
                          /var/cache/inferllama-tests/apt as root, else test-cache/apt beside the binary)
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(__file__))
from harness import BINARY, ROOT, FakeHub, _read_line_with_prefix, sha256, stop_process  # noqa: E402

MODEL = "acme/tiny-model"
RUNTIME_PACKAGES_SCRIPT = os.path.join(ROOT, "scripts", "runtime-packages.sh")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    @property
    def workdir(self) -> str:
        workdirs = self.args("WORKDIR")
        return workdirs[-1] if workdirs else "/"

    def commands(self) -> list[list[str]]:
        """Every simple command of the stage's RUN instructions, as argv lists (operators split them)."""
        commands = []
        for run in self.args("RUN"):
            lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in lexer:
                if token in SHELL_OPERATORS:
                    commands.append(command)
                    command = []
                else:
                    command.append(token)
            commands.append(command)
        return [c for c in commands if c]


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # blank lines and comments, also between the lines of one instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        instruction, _, args = (logical + line).partition(" ")
        logical = ""
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, args))
    return stages


def without_assignments(argv: list[str]) -> list[str]:
    """argv less leading VAR=value words (and an `env` running it)."""
    while argv and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]) or argv[0] == "env"):
        argv = argv[1:]
    return argv


def exec_form_or_words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


@dataclass
class Install:
    """What one `apt-get install` of the runtime stage installs: the packages it names and the files
    (`xargs -a FILE`) whose lines it appends."""
    named: list[str]
    from_files: list[str]


def apt_installs(stage: Stage) -> list[Install]:
    installs = []
    for argv in stage.commands():
        argv = without_assignments(argv)
        files = []
        if argv and os.path.basename(argv[0]) == "xargs":
            rest = argv[1:]
            while rest and rest[0].startswith("-"):
                option = rest.pop(0)
                if option in ("-a", "--arg-file"):
                    files.append(rest.pop(0))
                elif option.startswith("--arg-file="):
                    files.append(option.split("=", 1)[1])
                elif option.startswith("-a"):
                    files.append(option[2:])
            argv = without_assignments(rest)
        if not argv or os.path.basename(argv[0]) not in ("apt-get", "apt") or "install" not in argv:
            continue
        named, words = [], argv[argv.index("install") + 1:]
        while words:
            word = words.pop(0)
            if word in ("-o", "-t", "-c", "--option", "--target-release", "--config-file"):
                words.pop(0)
            elif not word.startswith("-"):
                named.append(word)
        installs.append(Install(named, files))
    return installs


def written_by_runtime_packages_script(stages: list[Stage], stage_name: str, path: str) -> bool:
    """Whether `stage_name` writes `path` with scripts/runtime-packages.sh (`... > path`)."""
    for stage in stages:
        if stage.name != stage_name:
            continue
        for argv in stage.commands():
            argv = without_assignments(argv)
            if argv and os.path.basename(argv[0]) == "runtime-packages.sh" and ">" in argv:
                target = argv[argv.index(">") + 1]
                if os.path.normpath(os.path.join(stage.workdir, target)) == os.path.normpath(path):
                    return True
    return False


def copies_from(stage: Stage) -> list[tuple[str, str, str]]:
    """(stage, source, destination) of each COPY --from=STAGE in `stage`."""
    copies = []
    for args in stage.args("COPY"):
        words = args.split()
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        words = [w for w in words if not w.startswith("--")]
        if source_stage:
            for src in words[:-1]:
                copies.append((source_stage, src, words[-1]))
    return copies


def stage_env(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.args("ENV"):
        words = shlex.split(args)
        if words and "=" not in words[0]:  # the old `ENV KEY value` form
            env[words[0]] = " ".join(words[1:])
        else:
            env.update(w.split("=", 1) for w in words)
    return env


def stage_directories(stage: Stage) -> dict[str, dict]:
    """Directories the stage's RUN makes: path -> {"mode", "uid", "gid"} (mkdir, install -d, chown, chmod),
    owners by number or by a name the stage gives a number (useradd --uid, groupadd --gid); an id the
    stage leaves to useradd or groupadd to pick is None (unknown here, left as root)."""
    ids: dict[tuple[str, str], int] = {}
    dirs: dict[str, dict] = {}
    for argv in stage.commands():
        argv = without_assignments(argv)
        if not argv:
            continue
        tool, words = os.path.basename(argv[0]), argv[1:]
        if tool in ("useradd", "groupadd") and ("--uid" in words or "--gid" in words):
            option = "--uid" if tool == "useradd" else "--gid"
            ids[(option, words[-1])] = int(words[words.index(option) + 1])
        elif tool in ("mkdir", "install") and (tool == "mkdir" or "-d" in words):
            spec = {"mode": 0o755, "owner": "0", "group": "0"}
            paths = []
            while words:
                word = words.pop(0)
                if word in ("-m", "--mode"):
                    spec["mode"] = int(words.pop(0), 8)
                elif word in ("-o", "--owner"):
                    spec["owner"] = words.pop(0)
                elif word in ("-g", "--group"):
                    spec["group"] = words.pop(0)
                elif not word.startswith("-"):
                    paths.append(word)
            for path in paths:
                dirs[path] = dict(spec)
        elif tool == "chown" and len(words) >= 2:
            owner, _, group = words[0].partition(":")
            for path in words[1:]:
                dirs.setdefault(path, {"mode": 0o755}).update(owner=owner, group=group or owner)
        elif tool == "chmod" and len(words) >= 2 and re.fullmatch(r"[0-7]{3,4}", words[0]):
            for path in words[1:]:
                dirs.setdefault(path, {"owner": "0", "group": "0"})["mode"] = int(words[0], 8)

    def numeric(option: str, name: str) -> int | None:
        return int(name) if name.isdigit() else ids.get((option, name))
    return {p: {"mode": d["mode"], "uid": numeric("--uid", d["owner"]), "gid": numeric("--gid", d["group"])}
            for p, d in dirs.items()}


def runtime_packages_of(binary: str) -> list[str]:
    out = subprocess.run([RUNTIME_PACKAGES_SCRIPT, binary], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"scripts/runtime-packages.sh failed:\n{out.stderr}")
    return out.stdout.split()


def default_cache_dir() -> str:
    if os.geteuid() == 0:
        return "/var/cache/inferllama-tests/apt"
    return os.path.join(os.path.dirname(os.path.abspath(BINARY)), "test-cache", "apt")


class Apt:
    """apt-get with its own package lists, status (nothing installed) and archive folder under `cache`:
    it resolves what an empty system needs for a set of packages and downloads it once."""

    def __init__(self, cache: str):
        self.cache = cache
        self.state = os.path.join(cache, "state")
        for d in (os.path.join(self.state, "lists", "partial"), os.path.join(cache, "cache", "archives", "partial")):
            os.makedirs(d, exist_ok=True)
        self.status = os.path.join(self.state, "status")
        open(self.status, "a").close()
        self.archives = os.path.join(cache, "cache", "archives")
        self.base = ["apt-get", "-q", "-o", f"Dir::State={self.state}", "-o", f"Dir::State::status={self.status}",
                     "-o", f"Dir::Cache={os.path.join(cache, 'cache')}", "-o", "Dir::Cache::pkgcache=pkgcache.bin",
                     "-o", "Dir::Cache::srcpkgcache=",
                     "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})

    def update(self) -> None:
        out = self.run("update")
        if out.returncode != 0:
            raise AssertionError(f"apt-get update failed:\n{out.stdout}\n{out.stderr}")
        self.run("autoclean")  # drop the .debs the new lists no longer offer: the cache stays bounded

    def has_lists(self) -> bool:
        return bool(glob.glob(os.path.join(self.state, "lists", "*Packages*")))

    def fetch(self, packages: list[str]) -> list[str]:
        """The .deb files of `packages` and everything they depend on (no recommends), downloading what
        the archive folder lacks; the lists are refreshed once when they are missing or stale."""
        with open(os.path.join(self.cache, "test.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one test run at a time uses this cache
            if not self.has_lists():
                self.update()
            try:
                return self._fetch(packages)
            except AssertionError:
                self.update()  # a package unknown to old lists, or a version the mirror no longer has
                return self._fetch(packages)

    def _fetch(self, packages: list[str]) -> list[str]:
        plan = self.run("-s", "install", "--no-install-recommends", *packages)
        if plan.returncode != 0:
            raise AssertionError(f"apt cannot install {' '.join(packages)}:\n{plan.stdout}\n{plan.stderr}")
        debs = []
        for pkg, version, arch in re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", plan.stdout, re.M):
            debs.append(os.path.join(self.archives, f"{pkg}_{version.replace(':', '%3a')}_{arch}.deb"))
        download = self.run("-y", "-d", "install", "--no-install-recommends", *packages)
        missing = [d for d in debs if not os.path.exists(d)]
        if download.returncode != 0 or missing:
            raise AssertionError(f"downloading {' '.join(packages)} failed (missing {missing}):\n"
                                 f"{download.stdout}\n{download.stderr}")
        return debs


class RuntimeImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("apt-get", "dpkg-deb", "readelf", "ldd"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} is not installed: the runtime root is built with Debian's tools")
        if not os.path.exists(BINARY):
            raise unittest.SkipTest(f"no node binary at {BINARY}")
        with open(os.path.join(ROOT, "Dockerfile")) as fh:
            cls.stages = parse_dockerfile(fh.read())
        cls.stage = cls.stages[-1]
        release = re.fullmatch(r"debian:(\d+)(-slim)?", cls.stage.base)
        with open("/etc/os-release") as fh:
            host = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        if not release or host.get("ID") != "debian" or host.get("VERSION_ID", "").strip('"') != release.group(1):
            raise unittest.SkipTest(f"the runtime stage is {cls.stage.base} and this is {host.get('PRETTY_NAME')}:"
                                    " its packages are resolved from this system's Debian release")
        if os.geteuid() == 0:
            cls.as_root = True
        elif subprocess.run(["unshare", "--map-root-user", "true"], capture_output=True).returncode == 0:
            cls.as_root = False  # chroot needs root; an unprivileged user namespace can do it as non-root
        else:
            raise unittest.SkipTest("neither root (for chroot) nor unprivileged user namespaces (for unshare)")

        cls.derived = runtime_packages_of(BINARY)
        cls.installed_by_stage: list[str] = []
        package_files: dict[str, list[str]] = {}
        copies = copies_from(cls.stage)
        for install in apt_installs(cls.stage):
            cls.installed_by_stage += install.named
            for path in install.from_files:
                source = next(((s, src) for s, src, dest in copies
                               if dest == path or (dest.endswith("/") and dest + os.path.basename(src) == path)), None)
                if not source or not written_by_runtime_packages_script(cls.stages, *source):
                    raise AssertionError(f"the runtime stage installs the lines of {path}, which the test cannot "
                                         "trace to scripts/runtime-packages.sh in the build stage")
                package_files[source[1]] = cls.derived
                cls.installed_by_stage += cls.derived
        cls.installed_by_stage = sorted(set(cls.installed_by_stage))
        if not cls.installed_by_stage:
            raise AssertionError("the runtime stage installs no package (no apt-get install found)")

        apt = Apt(os.environ.get("TEST_APT_CACHE_DIR") or default_cache_dir())
        cls.debs = apt.fetch(cls.installed_by_stage)
        cls.closure = sorted(os.path.basename(d).split("_")[0] for d in cls.debs)

        cls.tmp = tempfile.mkdtemp(prefix="inferllama-runtime-image-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.root = os.path.join(cls.tmp, "root")
        os.mkdir(cls.root)
        for deb in cls.debs:
            subprocess.run(["dpkg-deb", "-x", deb, cls.root], check=True)
        cls.copy_stage_files(copies, package_files)
        for path, spec in stage_directories(cls.stage).items():
            target = cls.in_root(path)
            os.makedirs(target, exist_ok=True)
            os.chmod(target, spec["mode"])
            if cls.as_root:
                unknown = -1  # os.chown leaves that id as it is
                os.chown(target, unknown if spec["uid"] is None else spec["uid"],
                         unknown if spec["gid"] is None else spec["gid"])
        user = cls.stage.args("USER")[-1] if cls.stage.args("USER") else "0"
        cls.user = user if ":" in user else f"{user}:{user}"
        cls.entrypoint = exec_form_or_words(cls.stage.args("ENTRYPOINT")[-1])
        cls.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/",
                   **stage_env(cls.stage)}

    @classmethod
    def in_root(cls, path: str) -> str:
        return os.path.join(cls.root, path.lstrip("/"))

    @classmethod
    def copy_stage_files(cls, copies, package_files: dict[str, list[str]]) -> None:
        """COPY --from=build: the package list as derived, the binary under test for build/inferllama, the
        build directory's other files beside the binary and the source tree's from this checkout."""
        for stage_name, src, dest in copies:
            build = next(s for s in cls.stages if s.name == stage_name)
            target = cls.in_root(dest)
            if dest.endswith("/"):
                target = os.path.join(target, os.path.basename(src))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if src in package_files:
                with open(target, "w") as fh:
                    fh.write("".join(p + "\n" for p in package_files[src]))
                continue
            relative = os.path.relpath(src, build.workdir)
            if relative == "build/inferllama":
                host = BINARY
            elif relative.startswith("build/"):
                host = os.path.join(os.path.dirname(os.path.abspath(BINARY)), relative[len("build/"):])
            else:
                host = os.path.join(ROOT, relative)
            shutil.copy2(host, target)

    def command(self, *argv: str) -> list[str]:
        """argv run in the root: as the image's USER under chroot, or as root in a user namespace."""
        if self.as_root:
            return ["chroot", f"--userspec={self.user}", self.root, *argv]
        return ["unshare", "--map-root-user", f"--root={self.root}", *argv]

    def run_in_root(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, env=self.env, timeout=60)

    def diagnosis(self) -> str:
        not_installed = sorted(set(self.derived) - set(self.closure))
        return (f"\nthe runtime stage installs: {' '.join(self.installed_by_stage)}"
                f"\nthe binary needs (scripts/runtime-packages.sh): {' '.join(self.derived)}"
                f"\nmissing from the stage: {' '.join(not_installed) or '(none)'}")

    def test_version_runs_in_the_runtime_root(self):
        out = self.run_in_root(self.entrypoint[0], "--version")
        self.assertEqual(out.returncode, 0, f"{out.stderr}{self.diagnosis()}")
        self.assertRegex(out.stdout, r"^inferllama \S+")

    def test_serve_help_runs_in_the_runtime_root(self):
        out = self.run_in_root(*self.entrypoint, "--help")
        self.assertEqual(out.returncode, 0, f"{out.stderr}{self.diagnosis()}")
        self.assertIn("--data-dir", out.stdout)

    def test_every_package_the_binary_needs_is_installed(self):
        self.assertEqual(sorted(set(self.derived) - set(self.closure)), [], self.diagnosis())

    def test_entrypoint_serves_the_hub_from_the_volume_as_the_image_user(self):
        volume = exec_form_or_words(self.stage.args("VOLUME")[-1])[0]
        log_path = os.path.join(self.tmp, "node.log")
        with FakeHub() as hub, open(log_path, "wb") as log:
            # The image's listeners, moved to free loopback ports; everything else as the image sets it.
            argv = [*self.entrypoint, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                    "--bt-listen", "127.0.0.1:0", "--tracker-udp", "127.0.0.1:0", "--upstream", hub.url]
            node = subprocess.Popen(self.command(*argv), stdout=subprocess.PIPE, stderr=log, env=self.env)
            try:
                try:
                    line = _read_line_with_prefix(node, "inferllama listening on ", "the node in the runtime root")
                except RuntimeError as e:
                    with open(log_path, errors="replace") as fh:
                        self.fail(f"{e}\n{fh.read()}{self.diagnosis()}")
                url, files = line.split()[-1], hub.files(MODEL)
                for path in ("config.json", "model.safetensors"):  # a git file, and an LFS file from the CDN
                    with urllib.request.urlopen(f"{url}/{MODEL}/resolve/main/{path}", timeout=60) as r:
                        self.assertEqual(sha256(r.read()), files[path]["sha256"], path)
            finally:
                code = stop_process(node)
                node.stdout.close()
        self.assertEqual(code, 0)
        data = self.in_root(volume)
        self.assertTrue(os.listdir(os.path.join(data, "chunks")), "nothing stored in the volume")
        if self.as_root:
            uid = int(self.user.split(":")[0])
            self.assertEqual({os.stat(os.path.join(data, name)).st_uid for name in os.listdir(data)}, {uid})
        with open(log_path, errors="replace") as fh:
            log_text = fh.read()
        # The fake Hub's weights are random bytes, which the scanner rightly reports as a bad safetensors header.
        warnings = [line for line in log_text.splitlines() if "[warning]" in line and "] scan of " not in line]
        self.assertEqual(warnings, [], "the node warns when it starts in the image")
        self.assertNotIn("[error]", log_text)


if __name__ == "__main__":
    unittest.main()
