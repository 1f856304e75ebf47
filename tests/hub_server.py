"""A small local server that speaks enough of the Hugging Face Hub HTTP API for the real clients.

`huggingface_hub`, `datasets`, `transformers` and `peft` talk to it when `HF_ENDPOINT` points at it and
`HF_HUB_DISABLE_XET=1` (uploads then use the LFS "basic" transfer, downloads plain HTTP). The `local_hub` fixture in
`conftest.py` starts one per test and points the clients at it with `point_clients_at`.

Routes (`{type}` is `models`, `datasets` or `spaces`; `{prefix}` is empty, `datasets/` or `spaces/`; `{repo}` is
`namespace/name`; `{rev}` is `main` or a commit id of the repo):

    GET      /api/whoami-v2                                 the fake user "user"
    POST     /api/repos/create                              409 (with the url) if the repo exists
    POST     /api/validate-yaml                             accepts every README
    GET      /api/{type}/{repo}[/revision/{rev}]            repo info: sha, siblings (sizes and LFS with ?blobs=1)
    GET      /api/{type}/{repo}/refs                        the one branch, `main`
    GET      /api/{type}/{repo}/tree/{rev}[/{path}]         ?recursive=&expand=, all in one page
    POST     /api/{type}/{repo}/paths-info/{rev}            form fields `paths` (repeated) and `expand`
    POST     /api/{type}/{repo}/preupload/{rev}             upload mode "lfs" or "regular" of each file
    POST     /api/{type}/{repo}/commit/{rev}                NDJSON: header, file, lfsFile, deletedFile/deletedFolder
    POST     /{prefix}{repo}.git/info/lfs/objects/batch     LFS batch API, "basic" transfer
    PUT      /lfs/upload/{sha256}                           the upload href of the batch answer (no token needed)
    POST     /lfs/verify/{sha256}                           the verify href of the batch answer
    GET|HEAD /{prefix}{repo}/resolve/{rev}/{path}           the file, with Range support and the Hub's headers

Storage: `{root}/{type}/{repo}/tree/` holds the files of `main`, `{root}/{type}/{repo}/meta.json` the commits and
which files are LFS, `{root}/lfs/{sha256}` the uploaded LFS objects. There is no history: every commit id of a repo
resolves to its current files. Reads need no token, writes need `Authorization: Bearer {token}`. ETags are the git
blob sha1 of regular files and the sha256 of LFS files, as on the Hub; files are served directly (no redirect to a
CDN). Errors carry the `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) from which
huggingface_hub raises its own exceptions. Requests no route matches (404) or that fail here (501, which clients do
not retry) are listed in `hub.unhandled`; private repos, branches, tags and pull requests are not supported.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest


USER = "user"
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".parquet", ".arrow")
URL_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
REPO_INFO_DEFAULTS = {"private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": []}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


class HubError(Exception):
    """An error answered as JSON, with the `X-Error-Code` header the client turns into its own exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class Repo:
    """A repo as read from disk; `sha` is its head commit."""

    def __init__(self, folder: Path, repo_type: str, repo_id: str):
        self.folder, self.repo_type, self.repo_id, self.tree = folder, repo_type, repo_id, folder / "tree"
        self.meta = json.loads((folder / "meta.json").read_text())
        self.sha = self.meta["commits"][-1]["id"] if self.meta["commits"] else None

    def paths(self) -> tuple[list[str], list[str]]:
        """The folders and the files of the repo, as sorted relative paths."""
        every = sorted(self.tree.rglob("*"))
        folders = [p.relative_to(self.tree).as_posix() for p in every if p.is_dir()]
        return folders, [p.relative_to(self.tree).as_posix() for p in every if p.is_file()]

    def etag(self, path: str) -> str:
        return self.meta["lfs"].get(path) or git_blob_sha1((self.tree / path).read_bytes())

    def entry(self, path: str, expand: bool = False) -> dict:
        """A `tree` or `paths-info` item: a file (with its `lfs` part if it is in LFS) or a directory."""
        last = self.meta["commits"][-1]
        extra = {"lastCommit": {"id": last["id"], "title": last["title"], "date": last["date"]}} if expand else {}
        if (self.tree / path).is_dir():
            oid = hashlib.sha1(f"{self.sha}:{path}".encode()).hexdigest()
            return {"type": "directory", "oid": oid, "size": 0, "path": path, **extra}
        size = (self.tree / path).stat().st_size
        item = {"type": "file", "oid": git_blob_sha1((self.tree / path).read_bytes()), "size": size, "path": path}
        if oid := self.meta["lfs"].get(path):
            pointer = lfs_pointer(oid, size)
            item.update(oid=git_blob_sha1(pointer), lfs={"oid": oid, "size": size, "pointerSize": len(pointer)})
        return {**item, **extra}


class LocalHub:
    """The server and its storage: `with LocalHub(root) as hub:` serves on `hub.endpoint` until the block ends."""

    def __init__(self, root: str | Path, token: str = "hf_local_hub_test_token"):
        self.root, self.token = Path(root), token
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests to inspect
        self.unhandled: list[tuple[str, str]] = []  # the requests no route matched, or that raised an exception
        self.lock = threading.RLock()  # commits and repo creations, one at a time
        self.announced: set[str] = set()  # sha256 of the LFS objects a batch call allowed to be PUT
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads, self.httpd.hub = True, self
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "LocalHub":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"

    def lfs_object(self, oid: str) -> Path:
        return self.root / "lfs" / oid

    def repo(self, repo_type: str, repo_id: str, revision: str | None = None) -> Repo:
        folder = self.root / repo_type / repo_id
        if not (folder / "meta.json").is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        repo = Repo(folder, repo_type, repo_id)
        if revision not in (None, "main") and revision not in {commit["id"] for commit in repo.meta["commits"]}:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str) -> bool:
        """Create a repo with the Hub's initial commit (a `.gitattributes`); False if it already exists."""
        folder = self.root / repo_type / repo_id
        with self.lock:
            if (folder / "meta.json").exists():
                return False
            (folder / "tree").mkdir(parents=True)
            gitattributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
            (folder / "tree" / ".gitattributes").write_text(gitattributes)
            (folder / "meta.json").write_text(json.dumps({"commits": [], "lfs": {}}))
            self._save(Repo(folder, repo_type, repo_id), "initial commit")
            return True

    def commit(self, repo_type: str, repo_id: str, revision: str, lines: list[dict]) -> str:
        """Apply the NDJSON operations of a commit to the files of `main`; returns the new commit id."""
        with self.lock:
            repo, title = self.repo(repo_type, repo_id, revision), "update"
            for line in lines:  # check first, so that a failed commit changes nothing
                if line["key"] == "lfsFile" and not self.lfs_object(line["value"]["oid"]).is_file():
                    raise HubError(422, f"The LFS object of {line['value']['path']} was never uploaded")
            for key, value in ((line["key"], line["value"]) for line in lines):
                target = repo.tree / value.get("path", "")
                if key == "header":
                    title = value.get("summary") or title
                elif key == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                    repo.meta["lfs"].pop(value["path"], None)
                elif key == "lfsFile":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.lfs_object(value["oid"]), target)
                    repo.meta["lfs"][value["path"]] = value["oid"]
                elif key in ("deletedFile", "deletedFolder"):
                    if not target.exists():
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                    gone = value["path"].rstrip("/")
                    repo.meta["lfs"] = {
                        p: o for p, o in repo.meta["lfs"].items() if not f"{p}/".startswith(f"{gone}/")
                    }
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            return self._save(repo, title)

    def _save(self, repo: Repo, title: str) -> str:
        """Record a commit of the current files: a new id, and `meta.json` replaced at once."""
        commits = repo.meta["commits"]
        sha = hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}:{len(commits)}:{title}:{now()}".encode()).hexdigest()
        commits.append({"id": sha, "title": title, "date": now()})
        (repo.folder / "meta.json.tmp").write_text(json.dumps(repo.meta))
        os.replace(repo.folder / "meta.json.tmp", repo.folder / "meta.json")
        return sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    hub: LocalHub

    def log_message(self, format, *args) -> None:  # no line on stderr per request
        pass

    def _dispatch(self) -> None:
        self.hub, url = self.server.hub, urlsplit(self.path)
        self.hub.requests.append((self.command, self.path))
        self.query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        body = self._read_body()
        try:
            for methods, pattern, handler in ROUTES:
                if self.command in methods and (match := re.fullmatch(pattern, url.path)):
                    return handler(self, body, **{k: v and unquote(v) for k, v in match.groupdict().items()})
            self.hub.unhandled.append((self.command, self.path))
            raise HubError(404, f"{self.command} {url.path} is not implemented by the local hub")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading, e.g. a stream it closed
            self.close_connection = True
        except Exception as error:
            if not isinstance(error, HubError):  # a bug here: 501, which clients do not retry
                self.hub.unhandled.append((self.command, self.path))
                error = HubError(501, f"The local hub failed on this request: {error!r}")
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._json({"error": error.message}, error.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, length: int | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _authorize(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    # --- account and repos ---

    def whoami(self, body):
        self._authorize()
        token = {"displayName": "local-hub", "role": "write"}
        self._json({"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token", "accessToken": token}})

    def create_repo(self, body):
        self._authorize()
        payload = json.loads(body)
        repo_type = f"{payload.get('type') or 'model'}s"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = self.hub.repo_url(repo_type, repo_id)
        if not self.hub.create_repo(repo_type, repo_id):
            return self._json({"error": "You already created this repo", "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, body):
        self._json({"errors": [], "warnings": []})

    def repo_info(self, body, type, repo, rev=None):
        info, siblings = self.hub.repo(type, repo, rev), []
        for path in info.paths()[1]:
            sibling = {"rfilename": path}
            if is_true(self.query.get("blobs")):  # `files_metadata=True`
                entry = info.entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if lfs := entry.get("lfs"):
                    sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        date = info.meta["commits"][-1]["date"]
        head = {"id": repo, "author": repo.split("/")[0], "sha": info.sha, "createdAt": date, "lastModified": date}
        self._json({**head, **REPO_INFO_DEFAULTS, "siblings": siblings})

    def refs(self, body, type, repo):
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": self.hub.repo(type, repo).sha}
        self._json({"branches": [branch], "converts": [], "tags": []})

    def tree(self, body, type, repo, rev, path=None):
        info, path = self.hub.repo(type, repo, rev), (path or "").strip("/")
        if path and not (info.tree / path).is_dir():
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": info.sha})
        prefix = f"{path}/" if path else ""
        folders, files = info.paths()
        paths = [p for p in folders + files if p.startswith(prefix)]
        if not is_true(self.query.get("recursive")):
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        self._json([info.entry(p, is_true(self.query.get("expand"))) for p in paths])

    def paths_info(self, body, type, repo, rev):
        info, form = self.hub.repo(type, repo, rev), parse_qs(body.decode())
        paths = [p.strip("/") for p in form.get("paths", [])]
        expand = is_true(form.get("expand", [""])[-1])
        self._json([info.entry(p, expand) for p in paths if p and (info.tree / p).exists()])

    # --- uploads ---

    def preupload(self, body, type, repo, rev):
        self._authorize()
        info, files = self.hub.repo(type, repo, rev), []
        for file in json.loads(body)["files"]:
            sample, path = base64.b64decode(file["sample"]), file["path"]
            lfs = file["size"] >= LFS_THRESHOLD or path.endswith(LFS_SUFFIXES) or b"\0" in sample
            oid = info.etag(path) if (info.tree / path).is_file() else None  # the client skips unchanged files
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files, "commitOid": info.sha})

    def commit(self, body, type, repo, rev):
        self._authorize()
        sha = self.hub.commit(type, repo, rev, [json.loads(line) for line in body.splitlines() if line.strip()])
        url = f"{self.hub.repo_url(type, repo)}/commit/{sha}"
        self._json({"commitUrl": url, "commitOid": sha, "success": True, "pullRequestUrl": None})

    def lfs_batch(self, body, repo, prefix=None):
        self._authorize()
        self.hub.repo(prefix or "models", repo)
        objects = []
        for obj in json.loads(body)["objects"]:
            objects.append({"oid": obj["oid"], "size": obj["size"], "authenticated": True})
            if not self.hub.lfs_object(obj["oid"]).is_file():  # no `actions`: already stored, nothing to upload
                self.hub.announced.add(obj["oid"])
                objects[-1]["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs/upload/{obj['oid']}"},
                    "verify": {"href": f"{self.hub.endpoint}/lfs/verify/{obj['oid']}"},
                }
        answer = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, answer, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, body, oid):
        """Like a signed storage URL: no token, but only for objects a batch call announced (maybe twice)."""
        if oid not in self.hub.announced:
            raise HubError(403, f"No upload of {oid} was requested")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match sha256 {oid}")
        self.hub.lfs_object(oid).parent.mkdir(parents=True, exist_ok=True)
        self.hub.lfs_object(oid).write_bytes(body)
        self._send(200, headers={"ETag": f'"{oid}"'})

    def lfs_verify(self, body, oid):
        self._authorize()
        if not self.hub.lfs_object(oid).is_file():
            raise HubError(404, f"LFS object {oid} not found")
        self._json({"success": True})

    # --- downloads ---

    def resolve(self, body, repo, rev, path, prefix=None):
        info = self.hub.repo(prefix or "models", repo, rev)
        file = info.tree / path
        if not file.is_file():
            raise HubError(404, f"Entry {path} not found", "EntryNotFound", {"X-Repo-Commit": info.sha})
        size, etag = file.stat().st_size, info.etag(path)
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": info.sha, "Accept-Ranges": "bytes"}
        if path in info.meta["lfs"]:  # what the Hub puts on the redirect to its CDN
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": size})
        start, end, status = 0, size - 1, 200
        if match := re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "")):
            first, last = match.groups()
            start, end = (int(first), min(int(last or end), end)) if first else (max(size - int(last), 0), end)
            if start >= size:
                return self._send(416, headers={"Content-Range": f"bytes */{size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        self._send(status, headers={"Content-Type": "application/octet-stream", **headers}, length=end - start + 1)
        if self.command == "GET":
            with file.open("rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))


TYPE, REPO, PREFIX = "(?P<type>models|datasets|spaces)", "(?P<repo>[^/]+/[^/]+)", "(?:(?P<prefix>datasets|spaces)/)?"
ROUTES = [
    (("GET",), r"/api/whoami-v2", _Handler.whoami),
    (("POST",), r"/api/repos/create", _Handler.create_repo),
    (("POST",), r"/api/validate-yaml", _Handler.validate_yaml),
    (("GET",), rf"/api/{TYPE}/{REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.repo_info),
    (("GET",), rf"/api/{TYPE}/{REPO}/refs", _Handler.refs),
    (("GET",), rf"/api/{TYPE}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    (("POST",), rf"/api/{TYPE}/{REPO}/paths-info/(?P<rev>[^/]+)", _Handler.paths_info),
    (("POST",), rf"/api/{TYPE}/{REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    (("POST",), rf"/api/{TYPE}/{REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    (("POST",), rf"/{PREFIX}{REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    (("PUT",), r"/lfs/upload/(?P<oid>[0-9a-f]{64})", _Handler.lfs_upload),
    (("POST",), r"/lfs/verify/(?P<oid>[0-9a-f]{64})", _Handler.lfs_verify),
    (("GET", "HEAD"), rf"/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


def point_clients_at(hub: LocalHub, monkeypatch: pytest.MonkeyPatch, home: Path) -> list[str]:
    """Send huggingface_hub, datasets, transformers and peft to `hub`, with fresh caches and no token under `home`.

    Sets the environment (all a subprocess needs) and patches what the libraries imported in this process copied from
    it at import time. Returns a list that collects every other host than 127.0.0.1 this process tries to resolve
    (the lookup fails at once): the caller should check that it stays empty. A subprocess has no such guard, and
    its `datasets.load_dataset` asks `datasets-server.127.0.0.1` for a parquet export (a lookup that fails, which
    datasets ignores): `USE_PARQUET_EXPORT` has no environment variable.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants
    import transformers.utils.hub
    from huggingface_hub import hf_api, hf_file_system

    env = {
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": hub.token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HUGGINGFACE_CO_STAGING", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    datasets_cache = Path(env["HF_DATASETS_CACHE"])
    patches = {
        hub_constants: {
            "ENDPOINT": hub.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_URL_HOSTS": hub_constants.HF_URL_HOSTS | {"127.0.0.1"},
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_TELEMETRY": True,
            **{name: env[name] for name in ("HF_HOME", "HF_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE")},
            "HUGGINGFACE_HUB_CACHE": env["HF_HUB_CACHE"],
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        },
        # Clients built at import with the endpoint of then.
        hf_api.api: {"endpoint": hub.endpoint},  # behind `huggingface_hub.model_info`, `create_repo`, ...
        hf_file_system.hffs: {"endpoint": hub.endpoint},
        hf_file_system.hffs._api: {"endpoint": hub.endpoint},
        # transformers builds a shared HfApi on first use: drop it so that the next use gets this endpoint.
        transformers.utils.hub: {"_hf_api": None, "HF_MODULES_CACHE": env["HF_MODULES_CACHE"]},
        datasets.config: {
            "HF_ENDPOINT": hub.endpoint,
            "HUB_DATASETS_URL": hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_HUB_OFFLINE": False,
            "USE_PARQUET_EXPORT": False,  # else it asks http://datasets-server.127.0.0.1:PORT for a parquet export
            "HF_UPDATE_DOWNLOAD_COUNTS": False,  # else each load sends a HEAD to s3.amazonaws.com
            "HF_CACHE_HOME": env["HF_HOME"],
            "HF_DATASETS_CACHE": datasets_cache,
            "HF_MODULES_CACHE": Path(env["HF_MODULES_CACHE"]),
            "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
            "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
        },
    }
    for target, values in patches.items():
        for name, value in values.items():
            monkeypatch.setattr(target, name, value)

    outside, getaddrinfo = [], socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            outside.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"the local hub lets no one resolve {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    return outside
