"""``tandem serve``: the recommendation service (FastAPI under uvicorn) over an artifact store.

A store without ``manifest.json`` is built first (the embedded default: ML-100K, ``tiny`` profile). The whole stack is
loaded before the server starts, so a missing or corrupt store is one error line and exit code 2, not a server that
answers 503.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.cli.common import add_parser
from tandem.config import add_dataclass_arguments, dataclass_from_args
from tandem.errors import TandemError


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from tandem.artifacts import Store, default_store, verify_store

    root = Path(args.artifacts).expanduser() if args.artifacts else default_store()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not Store(root).manifest.is_file():
        if root.exists() and not root.is_dir():
            raise TandemError(f"--artifacts {root} is a file; pass an artifact store folder")
        if args.artifacts and not args.build:  # only the default store builds itself: a typo must not start a build
            raise TandemError(f"--artifacts {root} is not a built artifact store (no manifest.json); check the path, "
                              f"or add --build to build the embedded default into it")
        print(f"tandem: no artifact store at {root}: building the embedded default (ML-100K, tiny profile) into it "
              f"first; this takes a while once", file=sys.stderr)
        try:
            from pipelines.build import ensure_built
        except ImportError as exc:
            raise TandemError(f"this checkout cannot build an artifact store ({exc}); pass --artifacts with a built "
                              f"store") from None
        ensure_built(root)
    from llm_cloud.service.app import create_app
    from llm_cloud.service.queue_config import QueueConfig
    from llm_cloud.service.stack import load_stack

    try:
        queues = dataclass_from_args(QueueConfig, args, llm_process=args.llm_process)
    except ValueError as exc:
        raise TandemError(f"{exc}; see tandem serve --help") from None
    verify_store(root)  # a truncated or edited file: one line and exit code 2, not a half-loaded server
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.engine == "ray":
        return _serve_ray(root, args, queues)
    if args.replicas != 1 or args.ray_address:
        raise TandemError("--replicas and --ray-address need --engine ray; add it, or leave them out")
    llm_process = None
    if queues.llm_process and args.backend == "transformers":  # it loads its copy while this process loads the rest
        from llm_cloud.service.llm_process import LLMProcess

        llm_process = LLMProcess(Store(root).llm, "transformers", queues.llm_threads)
    try:
        stack = load_stack(root, args.backend, thinkrec=args.thinkrec)  # a TandemError: one line, exit code 2
    except BaseException:
        if llm_process is not None:
            llm_process.close()
        raise
    app = create_app(root, args.backend, stack=stack, threads=args.threads, cache_size=args.cache_size,
                     queues=queues, llm_process=llm_process)
    import uvicorn

    print(f"tandem: serving {root} on http://{args.host}:{args.port} (web page: /, API docs: /docs)", file=sys.stderr)
    try:  # the service writes its own access log (logger tandem.access), so uvicorn's is off
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        stack.close()
    return 0


def _serve_ray(root: Path, args: argparse.Namespace, queues) -> int:
    from pipelines import ray_serve

    print(f"tandem: deploying {args.replicas} replica(s) of {root} on Ray Serve, proxy on http://{args.host}:"
          f"{args.port}", file=sys.stderr)
    ray_serve.run(root, args.host, args.port, args.ray_address, backend=args.backend, replicas=args.replicas,
                  cache_size=args.cache_size, queues=queues, threads=args.threads or 1,
                  concurrency=args.replica_concurrency)
    return 0


def register(sub) -> None:
    p = add_parser(sub, "serve", "serve recommendations over HTTP (FastAPI): a web page at /, POST /v1/recommend, "
                   "/v1/candidates, /v1/parameters, /v1/explain, GET /v1/items, /healthz, /readyz, /metrics, docs at "
                   "/docs; builds the embedded default store on first use (into --artifacts only with --build)",
                   _serve, build=_queue_flags)
    p.add_argument("--artifacts", metavar="DIR",
                   help="artifact store folder (default: $TANDEM_HOME/artifacts/ml-100k-tiny)")
    p.add_argument("--build", action="store_true",
                   help="build the embedded default store into --artifacts when it has no manifest.json (without "
                        "--artifacts the default store is always built on first use)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                   help="engine of the LLM and of the reasoning model (default: transformers; vllm needs the "
                        "[vllm] extra)")
    p.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--cache-size", type=_positive, default=4096,
                   help="candidate lists kept in the server's LRU cache (default: 4096)")
    p.add_argument("--thinkrec", metavar="DIR", default=None,
                   help="ThinkRec reasoning model folder (OUT/model of `tandem eval thinkrec --out OUT`) for POST "
                        "/v1/explain and `reasoning: true` (default: the store's thinkrec/ folder when it has "
                        "thinkrec.json; without one both answer 400 feature_not_enabled)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one uvicorn process; ray: replicas on Ray Serve behind its proxy (the [ray] extra)")
    p.add_argument("--replicas", type=_positive, default=1,
                   help="--engine ray: replicas, each a process with its own model copy and candidate LRU")
    p.add_argument("--replica-concurrency", type=_positive, default=64,
                   help="--engine ray: requests a replica takes at once, the rest wait at Serve's proxy (default 64; "
                        "enough for its micro-batches to fill)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--engine ray: an existing cluster (auto, ray://host:10001); default: start a local one")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="log level of the server and its access log (default: info)")


def _queue_flags(parser: argparse.ArgumentParser) -> None:
    from llm_cloud.service.queue_config import QueueConfig

    group = parser.add_argument_group("queues and deadlines")
    group.add_argument("--llm-process", action=argparse.BooleanOptionalAction, default=True,
                       help="run the transformers backend's candidate search in a process of its own, so it does not "
                            "share the interpreter lock with the HTTP side (default: on)")
    add_dataclass_arguments(group, QueueConfig)
