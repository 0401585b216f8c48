"""HTTP serving of one entities pipeline (FastAPI; run by uvicorn, see ``nlp-serve``).

``POST /predict {"texts": [...]}`` -> ``{"entities": [[{entity_group, score, word, start, end}, ...], ...]}``
(one list per text; a model of plain tags such as POS answers ``{"words": [[{word, tag, score,
start, end}, ...], ...]}``, one dict per word), ``GET /health`` -> model kind, labels, output,
``ok``, ``GET /metrics`` -> counters of this worker process. Requests that arrive together are coalesced by a :class:`MicroBatcher` into
one model call, which runs in a worker thread so the event loop keeps accepting requests.
Needs the ``serve`` extra (``pip install -e .[serve]``).
"""
# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (``Request``)
# at runtime, and they name classes imported inside create_app
import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nlp_distill.config import ServeConfig

logger = logging.getLogger(__name__)

# ``nlp-serve`` hands the config to uvicorn's worker processes through this variable
CONFIG_ENV = "NLP_DISTILL_SERVE_CONFIG"

Entities = List[Dict[str, Any]]


@dataclass
class BatchStats:
    """Counters of one server process (``GET /metrics``)."""

    requests: int = 0
    texts: int = 0
    model_calls: int = 0
    largest_call: int = 0  # texts in the largest model call so far
    errors: int = 0
    model_seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"requests": self.requests, "texts": self.texts, "model_calls": self.model_calls,
                "largest_call": self.largest_call, "errors": self.errors,
                "model_seconds": round(self.model_seconds, 6), "pid": os.getpid()}


@dataclass
class _Pending:
    texts: List[str]
    future: "asyncio.Future[List[Entities]]"


@dataclass
class MicroBatcher:
    """Coalesce concurrent ``submit`` calls into one call of ``predict`` (a list of texts in, one
    result per text out, in order).

    The first waiting request opens a batch; requests join it until it holds ``max_batch_size``
    texts or ``max_wait_ms`` has passed. A request is never split, so one larger than
    ``max_batch_size`` runs alone. ``predict`` runs in one worker thread: while it works, new
    requests queue up and form the next batch.
    """

    predict: Callable[[List[str]], List[Entities]]
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._held: Optional[_Pending] = None  # a request that did not fit the previous batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, texts: List[str]) -> List[Entities]:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        self.stats.requests += 1
        self.stats.texts += len(texts)
        if not texts:
            return []
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), fut))
        return await fut

    async def _collect(self) -> List[_Pending]:
        """The next batch: the held-over request or the next queued one, then whatever joins in time."""
        assert self._queue is not None
        first = self._held or await self._queue.get()
        self._held = None
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait_ms / 1000.0
        while size < self.max_batch_size:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(nxt.texts) > self.max_batch_size:
                self._held = nxt  # opens the next batch
                break
            batch.append(nxt)
            size += len(nxt.texts)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]  # a client that went away is skipped
            texts = [t for p in live for t in p.texts]
            if not texts:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.predict, texts)
                if len(results) != len(texts):
                    raise RuntimeError(f"model returned {len(results)} results for {len(texts)} texts")
            except Exception as e:  # every request of the batch gets the error; the server lives on
                logger.exception("model call on %d texts failed", len(texts))
                self.stats.errors += 1
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            finally:
                self.stats.model_calls += 1
                self.stats.largest_call = max(self.stats.largest_call, len(texts))
                self.stats.model_seconds += time.perf_counter() - t0
            start = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(results[start : start + len(p.texts)])
                start += len(p.texts)


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_texts(body: bytes, max_texts: int, max_chars: int) -> List[str]:
    """The ``texts`` of a ``/predict`` body, or :class:`RequestError` (400) saying what is wrong."""
    try:
        payload = json.loads(body)
    except UnicodeDecodeError as e:
        raise RequestError(400, f"body is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(payload, dict) or "texts" not in payload:
        raise RequestError(400, 'expected a JSON object {"texts": ["a text", ...]}')
    unknown = sorted(set(payload) - {"texts"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; the only field is 'texts'")
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise RequestError(400, f"'texts' must be a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(400, f"texts[{i}] must be a string, got {type(t).__name__}")
    if len(texts) > max_texts:
        raise RequestError(400, f"too many texts: {len(texts)} > {max_texts} per request (send several requests)")
    for i, t in enumerate(texts):
        if len(t) > max_chars:
            raise RequestError(400, f"texts[{i}] is too long: {len(t)} > {max_chars} characters")
    return texts


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes`` (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"body too large: {declared} > {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestError(413, f"body too large: more than {max_bytes} bytes")
    return bytes(body)


def _plain(entity: Dict[str, Any]) -> Dict[str, Any]:
    """An entity dict with plain JSON types (scores may come as numpy floats)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in entity.items()}


def create_app(pipeline: Any, max_texts: int = 256, max_chars: int = 10000, max_wait_ms: float = 5.0,
               max_batch_size: int = 64, max_body_bytes: int = 4_000_000) -> Any:
    """A FastAPI app serving ``pipeline`` (``pipeline(texts) -> entities per text``, with
    ``.labels`` and ``.model_kind``; its ``.output``, ``"entities"`` or ``"words"`` (plain tags),
    is the key of the ``/predict`` answer), loaded by the caller once.

    Args:
        pipeline: the entities pipeline (``nlp_distill.pipeline(model_dir)``).
        max_texts / max_chars: per-request limits on the number of texts / characters of one text (400).
        max_wait_ms / max_batch_size: micro-batching of concurrent requests (see :class:`MicroBatcher`).
        max_body_bytes: largest accepted body (413).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = MicroBatcher(pipeline, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    output = getattr(pipeline, "output", "entities")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="nlp-distill entities", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        texts = parse_texts(await read_body(request, max_body_bytes), max_texts, max_chars)
        try:
            results = await batcher.submit(texts)
        except Exception as e:
            return JSONResponse({"detail": f"model call failed: {type(e).__name__}: {e}"}, status_code=500)
        return JSONResponse({output: [[_plain(e) for e in ents] for ents in results]})

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return {"ok": True, "model_kind": pipeline.model_kind, "labels": list(pipeline.labels), "output": output,
                "model_calls": batcher.stats.model_calls}

    @app.get("/metrics")
    async def metrics() -> Dict[str, Any]:
        return batcher.stats.to_dict()

    return app


def app_from_config(config: ServeConfig) -> Any:
    """Load the model of ``config`` (once, in this process) and build its app."""
    from nlp_distill.pipelines import pipeline  # the function `from nlp_distill import pipeline` exports

    ner = pipeline(config.model_dir, backend=config.backend, device=config.device, batch_size=config.batch_size,
                   precision=config.precision, threads=config.threads)
    logger.info("serving %s (%s) from %s, pid %d", ner.model_kind, config.backend, config.model_dir, os.getpid())
    return create_app(ner, max_texts=config.max_texts, max_chars=config.max_chars, max_wait_ms=config.max_wait_ms,
                      max_batch_size=config.max_batch_size, max_body_bytes=config.max_body_bytes)


def app_from_env() -> Any:
    """uvicorn factory (``nlp_distill.serving:app_from_env``): each worker reads the config that
    ``nlp-serve`` put in ``NLP_DISTILL_SERVE_CONFIG`` and loads the model once."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start the server with nlp-serve")
    return app_from_config(ServeConfig.from_dict(json.loads(raw)))
