"""Serving an imported bundle: ``build_app`` binds only the services it has, and an extra
bundle gets its own copies of them (``<Service>-<bundle>``) handed to the gateway and the job
worker as peers."""

from __future__ import annotations

from pathlib import Path

from tessera import runtime
from tessera.app import build_app

REPO = Path(__file__).resolve().parents[3]


def test_an_imported_bundle_alone_has_no_language_model(kandinsky_bundle: Path) -> None:
    app = build_app({"bundle_dir": str(kandinsky_bundle)})
    kwargs = app._bound_deployment.init_kwargs
    assert {"prior", "decoder", "tokenizer", "detokenizer"} <= set(kwargs)
    assert "lm" not in kwargs and kwargs["peers"] is None


def test_extra_bundle_gets_its_own_services(kandinsky_bundle: Path, tmp_path: Path) -> None:
    config = runtime.read_serve_config(REPO / "deploy" / "serve" / "local.yaml")
    options = runtime.deployment_options(config["applications"][0], quiet=True)
    args = {
        "bundle_dir": str(tmp_path),
        "extra_bundles": [str(kandinsky_bundle)],
        "redis_url": "redis://127.0.0.1:1",
    }
    app = build_app(args, options)
    gateway = app._bound_deployment
    name = kandinsky_bundle.name
    peer = gateway.init_kwargs["peers"][name]
    assert peer["bundle_dir"] == str(kandinsky_bundle.resolve())
    assert set(peer) == {"bundle_dir", "prior", "decoder", "tokenizer", "detokenizer"}
    decoder = peer["decoder"]._bound_deployment
    assert decoder.name == f"Decoder-{name}"
    assert decoder.ray_actor_options["num_cpus"] == 0.3  # the Decoder's options from the config
    assert gateway.init_kwargs["decoder"]._bound_deployment.name == "Decoder"
    worker = gateway.init_kwargs["job_worker"]._bound_deployment
    assert set(worker.init_kwargs["peers"]) == {name}
