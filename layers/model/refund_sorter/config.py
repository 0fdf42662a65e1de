"""The one settings object, read from the environment (prefix ``REFUND_SORTER_``).

Lambda functions get these from the SAM template's environment; the CLI and the local stack from the shell.
``get_settings()`` builds it once per process; tests call ``get_settings.cache_clear()`` after changing env.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path(__file__).parent / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFUND_SORTER_", frozen=True)

    # Classification
    confidence_threshold: float = Field(0.6, ge=0, le=1, description="Below this category confidence: needs_review")
    top_k: int = Field(5, ge=1, le=20, description="How many ImageNet labels a Result lists")
    model_path: Path = Field(DATA_DIR / "efficientnet_lite0.onnx", description="The ONNX classifier")
    batch_size: int = Field(16, ge=1, le=256, description="Images per onnxruntime call")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads; 0 = one per core")
    mirror_average: bool = Field(
        False,
        description="Also run each photo's mirror image and average the two (bench/backbones.md: what it gives and "
        "costs): twice the model's time per photo",
    )

    # Limits on what we accept
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest photo file accepted, in bytes")
    max_image_pixels: int = Field(64_000_000, gt=0, description="Largest photo accepted, in pixels (50 MP phones)")
    # The smallest functions (API, embed) have 1,024 MB, ~340 MB of it the runtime and the model: this leaves ~200 MB
    # spare. A 48 MP phone photo fits in every format phones write (HEIC ~330 MB, AVIF ~420 MB, JPEG a few MB at
    # its draft scale), as does a 64 MP RGB PNG (~260 MB) or 16-bit greyscale one (~200 MB): bench/memory.md.
    decode_memory_mb: int = Field(
        480,
        gt=0,
        description="Most memory decoding may take at once in a process, all decode threads together, in MiB; "
        "a photo that alone would need more is refused (decompression_bomb)",
    )

    # Fetching URLs (the API fetches what strangers name)
    fetch_connect_timeout: float = Field(3.0, gt=0, description="Seconds to connect to a URL's host")
    fetch_read_timeout: float = Field(10.0, gt=0, description="Seconds between bytes while reading a URL")
    fetch_max_redirects: int = Field(3, ge=0, le=10, description="Redirect hops followed, each re-checked")
    allow_private_urls: bool = Field(False, description="Allow loopback/private hosts and any port: local stack only")

    # Where things live (set by the template; the local stack sets them too)
    bucket: str = Field("", description="S3 bucket of photos and exports")
    table: str = Field("", description="DynamoDB table of Results")
    idempotency_table: str = Field("", description="DynamoDB table of API idempotency records")
    idempotency_seconds: int = Field(86_400, gt=0, description="How long an Idempotency-Key replays its answer")
    incoming_prefix: str = "incoming/"
    processed_prefix: str = "processed/"
    failed_prefix: str = "failed/"
    exports_prefix: str = "exports/"
    uploads_prefix: str = Field(
        "uploads/", description="Where the API keeps the photos it was sent or fetched, as <result id>.<ext>"
    )
    thumbnails_prefix: str = "thumbnails/"
    thumbnail_side: int = Field(
        512, ge=0, le=2048, description="Long side of the JPEG thumbnail a reviewer sees; 0 = no thumbnails"
    )
    photo_link_seconds: int = Field(900, ge=60, le=3600, description="How long a presigned photo link works")
    endpoint_url: str = Field(
        "", description="AWS endpoint for S3 and DynamoDB (a moto server for `sam local invoke`); empty = AWS"
    )
    aws_max_attempts: int = Field(8, ge=1, le=20, description="Tries per AWS call (adaptive retry mode)")
    batch_safety_seconds: float = Field(
        30.0, ge=0, description="The batch stops taking new photos when less than this much Lambda time remains"
    )

    # The nightly fan-out (a Step Functions state machine: plan → Distributed Map of chunk workers → export)
    jobs_table: str = Field("", description="DynamoDB table of the nightly run's lease and photos in flight")
    runs_prefix: str = Field("runs/", description="Where each nightly run keeps its manifest, chunk results, summary")
    trend_key: str = Field(
        "nightly-trend.json", description="The last nights' auto-sorted share, review rate and backlog (the summaries')"
    )
    chunk_size: int = Field(
        500, ge=1, le=1500, description="Photos to classify per chunk (one worker invocation): ~25 s of a 300 s timeout"
    )
    run_lease_seconds: int = Field(
        21_600, gt=0, description="How long a nightly run holds its lease unless it releases it (its time limit)"
    )
    # Custom departments (refund_sorter.heads): trained heads, the ACTIVE pointer, kept features
    models_table: str = Field("", description="DynamoDB table with the ACTIVE model pointer; empty = no heads")
    models_prefix: str = "models/"
    embeddings_prefix: str = "embeddings/"
    labelled_prefix: str = "labelled/"
    head_pointer_ttl_seconds: float = Field(
        60.0, ge=0, description="How long a running function trusts its read of the ACTIVE model pointer"
    )
    target_precision: float = Field(
        0.98, gt=0, le=1, description="Training picks the auto-sort threshold so auto-sorted photos reach this"
    )
    min_photos_per_department: int = Field(10, ge=2, description="Training refuses departments with fewer photos")
    # On: the threshold is set on the labelled/ photos alone (a plain sample of the shop's photos); the review
    # decisions, the photos a head was unsure of, still teach the weights but would make it far stricter than the
    # target (bench/loop.md, "The threshold rule"). Off: a hold-out of every label, reviews included.
    threshold_from_labelled_only: bool = Field(
        True, description="Training sets the auto-sort threshold on labelled/ photos only, not on review decisions"
    )
    not_a_product_gate: float = Field(
        0.5, gt=0, le=1, description="With a head: at or above this ImageNet not-a-product probability, review"
    )

    # The learning loop: retraining after the night, champion (the active head) against challenger
    retrain_min_decisions: int = Field(
        20,
        ge=0,
        description="The nightly run retrains when at least this many decisions were made since the last version",
    )
    auto_activate: bool = Field(
        True, description="A trained version that beats the active one on held-out decisions is activated by itself"
    )
    promotion_min_precision_delta: float = Field(
        0.0, ge=-1, le=1, description="A challenger's precision must be at least the champion's plus this"
    )
    promotion_min_share_delta: float = Field(
        0.0, ge=0, le=1, description="A challenger must auto-sort strictly more than the champion plus this share"
    )
    held_out_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share of decisions never trained on: both sides are compared on them"
    )
    held_out_seed: int = Field(0, description="Picks the held-out decisions; keep it fixed so they stay held out")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
