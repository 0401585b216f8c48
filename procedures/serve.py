"""``nlp-serve``: an HTTP server for a saved model. Thin: flags -> ServeConfig -> uvicorn running
``nlp_distill.serving`` (one model per worker process).

    nlp-serve --model_dir runs/student/model --port 8000 --workers 2 --threads 1
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import click

from nlp_distill.config import ServeConfig
from nlp_distill.errors import ConfigError, DataFormatError, LabelMismatchError, framework_hint, missing_framework
from procedures.options import build_configs, config_options


def serve(config: ServeConfig) -> None:
    """Run uvicorn until interrupted. The model is loaded here first, so a folder that holds no
    model fails before any worker starts; one worker serves that app, several each load their own
    copy from ``config`` (handed over through the environment)."""
    import uvicorn

    from nlp_distill.serving import CONFIG_ENV, app_from_config

    app = app_from_config(config)
    if config.workers == 1:
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)
        return
    del app
    os.environ[CONFIG_ENV] = json.dumps(config.to_dict())  # spawned workers inherit it
    uvicorn.run("nlp_distill.serving:app_from_env", factory=True, host=config.host, port=config.port,
                workers=config.workers, log_level=config.log_level)


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help='JSON with a "serve" section (the fields below); typed flags override it.')
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")
@config_options(ServeConfig)
@click.pass_context
def nlp_serve(ctx: click.Context, config_file: Optional[str], debug: bool, **_: Any) -> None:
    """Serve a saved model over HTTP: POST /predict {"texts": [...]}, GET /health, GET /metrics.

    Concurrent requests are coalesced into one model call (--max_batch_size, --max_wait_ms)."""
    from procedures.logs import setup_logging

    try:
        config = build_configs(ctx, config_file)["serve"]
        if not config.model_dir:
            raise ConfigError("--model_dir is required")
        if not Path(config.model_dir).is_dir():
            raise ConfigError(f"--model_dir {config.model_dir}: no such folder")
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"nlp-serve needs FastAPI and uvicorn: pip install fastapi uvicorn ({e})") from None
        setup_logging()
        serve(config)
    except (ConfigError, DataFormatError, LabelMismatchError, FileNotFoundError) as e:
        if debug or os.environ.get("NLP_DISTILL_DEBUG"):
            raise
        raise click.ClickException(str(e)) from e
    except ImportError as e:
        if missing_framework(e) is None or debug or os.environ.get("NLP_DISTILL_DEBUG"):
            raise
        raise click.ClickException(framework_hint(missing_framework(e))) from e


if __name__ == "__main__":
    nlp_serve()
