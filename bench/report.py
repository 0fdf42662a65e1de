"""``make bench``'s verdicts against the targets, and bench/results.md: the table and the notes under it."""

from __future__ import annotations

from typing import Any, Final

from bench import snapstart
from bench.int8 import INT8_MIN_CATEGORY_AGREEMENT

TARGETS: Final = {
    "batch_vs_naive": 6.0,  # batch pipeline ≥ 6× naive images/s
    "batch_vs_floor": 1.3,  # batch pipeline within 1.3× of the floor (time per image)
    "predict_p50_ms": 25.0,
    "cold_start_ms": 400.0,
    "layer_mb": 120.0,
    "usd_per_1000": 0.002,
}


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []

    def add(name: str, measured: float | None, target: str, *, better: str, unit: str, detail: str) -> None:
        goal = TARGETS[target]
        met = None if measured is None else measured >= goal if better == "higher" else measured <= goal
        row = {"metric": name, "measured": measured, "target": goal, "better": better, "unit": unit, "met": met}
        rows.append(row | {"detail": detail})

    s = results["summary"]
    add(
        "batch pipeline vs naive (images/s ratio)",
        s["batch_vs_naive"],
        "batch_vs_naive",
        better="higher",
        unit="×",
        detail=f"{s['batch_images_per_s']:.1f} vs {s['naive_images_per_s']:.2f} images/s",
    )
    add(
        "batch pipeline time per image vs floor",
        s["batch_vs_floor"],
        "batch_vs_floor",
        better="lower",
        unit="×",
        detail=f"{1000 / s['batch_images_per_s']:.1f} vs {s['floor_ms_per_image']:.1f} ms per image",
    )
    warm = results.get("predict_warm", {})
    if "memory_store" in warm:
        memory, moto = warm["memory_store"], warm["moto"]
        add(
            "warm predict p50, 12 MP JPEG (memory store)",
            round(memory["p50_ms"], 1),
            "predict_p50_ms",
            better="lower",
            unit="ms",
            detail=f"p95 {memory['p95_ms']:.1f} ms; on moto p50 {moto['p50_ms']:.1f}, p95 {moto['p95_ms']:.1f} ms; "
            f"the photo resized to 1600 px by the client: p50 {warm['downsized_memory_store']['p50_ms']:.1f} ms",
        )
    cold = results.get("cold_start", {})
    if "total_to_first_answer_ms" in cold:
        add(
            "cold start to first answer",
            cold["total_to_first_answer_ms"],
            "cold_start_ms",
            better="lower",
            unit="ms",
            detail=f"interpreter {cold['interpreter_start_ms']:.0f} + import {cold['import_handler_ms']:.0f} "
            f"+ first request {cold['first_request_ms']:.0f} ms",
        )
    layer = results.get("layer", {})
    add(
        "model layer unzipped",
        layer.get("mb"),
        "layer_mb",
        better="lower",
        unit="MB",
        detail=layer.get("source") or layer.get("reason", ""),
    )
    money = results["cost"]
    add(
        "cost per 1,000 photos (batch)",
        round(money["usd_per_1000"], 5),
        "usd_per_1000",
        better="lower",
        unit="$",
        detail=f"{money['memory_mb']} MB = {money['lambda_vcpus']} vCPU: "
        f"{money['lambda_seconds_per_photo'] * 1000:.1f} ms per photo there by CPU time; "
        f"by wall-time scaling ${money['by_wall_usd_per_1000']:.5f}",
    )
    return rows


def markdown(results: dict[str, Any]) -> str:
    s, corpus, cpu = results["summary"], results["corpus"], results["summary"]["cpu_ms_per_image"]
    lines = [
        "# refund-sorter benchmark",
        "",
        f"`{results['command']}` — {results['started']}, {results['machine']['cpus']} vCPU "
        f"{results['machine']['cpu']}. Corpus {corpus['key']}: {corpus['photos']} phone-like JPEGs "
        f"({', '.join(corpus['sizes'])}; {corpus['file_mb']['median']} MB median, {corpus['file_mb']['max']} MB max; "
        f"EXIF orientations 1/3/6/8; quality {corpus['quality_min_max'][0]}–{corpus['quality_min_max'][1]}). "
        f"Medians of {results['repeats']} interleaved rounds; whole run {results['seconds']:.0f} s. CPUs this process "
        f"actually got (2-thread hashing probe): {results['machine']['cpus_available_at_start']} at the start, "
        f"{results['machine']['cpus_available_at_end']} at the end; the batch pipeline used {s['pipeline_cpus_used']}.",
        "",
        "| measurement | images/s | ms per image | CPU ms per image |",
        "|---|---:|---:|---:|",
    ]
    w = s["workers"]
    rates = [
        (
            "naive: full decode + exif_transpose + resize + batch-1 ONNX",
            s["naive_images_per_s"],
            results["naive"]["cpu_ms_per_image"],
        ),
        ("floor: draft decode 1 thread + batch-16 ONNX", 1000 / s["floor_single_thread_ms_per_image"], None),
        (f"floor: draft decode {w} threads + batch-16 ONNX", 1000 / s["floor_ms_per_image"], None),
        ("  draft decode alone, 1 thread (`load_image`)", 1000 / s["decode_single_ms_per_image"], cpu.get("decode_1")),
        (f"  draft decode alone, {w} threads", 1000 / s["decode_pool_ms_per_image"], cpu.get("decode_pool")),
        ("  batch-16 inference alone, fp32", 1000 / s["infer_fp32_ms_per_image"], cpu.get("infer_fp32")),
        ("**batch pipeline** `Sorter.classify` → MemoryResultStore", s["batch_images_per_s"], cpu.get("pipeline")),
    ]
    if s.get("infer_int8_ms_per_image"):
        rates.append(("  batch-16 inference alone, int8", 1000 / s["infer_int8_ms_per_image"], cpu.get("infer_int8")))
        rates.append(
            ("batch pipeline, int8 model → MemoryResultStore", s["batch_int8_images_per_s"], cpu.get("pipeline_int8"))
        )
    moto = results.get("batch_moto", {})
    if moto.get("images_per_s"):
        rates.append(("nightly `run_nightly` on moto (S3, DynamoDB, archive, export)", moto["images_per_s"], None))
    torch = results.get("torch", {})
    if torch.get("images_per_s"):
        rates.append(("PyTorch eager batch-16 inference alone (.venv-model)", torch["images_per_s"], None))
        rates.append(
            ("PyTorch eager pipeline (draft decode in threads + torch)", s["torch_pipeline_images_per_s"], None)
        )
    for name, rate, cpu_ms in rates:
        lines.append(f"| {name} | {rate:.1f} | {1000 / rate:.1f} | {'' if cpu_ms is None else f'{cpu_ms:.1f}'} |")
    lines += ["", "| target | measured | goal | met | detail |", "|---|---:|---:|:-:|---|"]
    for row in results["targets"]:
        measured = "n/a" if row["measured"] is None else f"{row['measured']:g} {row['unit']}"
        op = "≥" if row["better"] == "higher" else "≤"
        met = {True: "yes", False: "**no**", None: "?"}[row["met"]]
        lines.append(
            f"| {row['metric']} | {measured} | {op} {row['target']:g} {row['unit']} | {met} | {row['detail']} |"
        )
    lines += ["", *notes(results)]
    return "\n".join(lines) + "\n"


def notes(results: dict[str, Any]) -> list[str]:
    out = []
    s_all = results["summary"]
    naive_run = results["naive"]
    out.append(
        "- Draft decoding vs full decoding (naive): top-1 label agreement "
        f"{naive_run['top1_agreement_with_product']:.1%}, "
        f"department agreement {naive_run['category_agreement_with_product']:.1%}."
    )
    int8 = results.get("int8", {})
    if "category_agreement" in int8:
        verdict = "offer it as a setting" if int8["offer_as_setting"] else "do not offer it"
        out.append(
            f"- int8 ({int8['model']}, {int8['file_mb']} MB): department agreement with fp32 "
            f"{int8['category_agreement']:.1%}, top-1 label agreement {int8['top1_label_agreement']:.1%} over "
            f"{int8['photos']} photos; inference {int8['speedup_inference']:.2f}× fp32, pipeline "
            f"{int8['speedup_pipeline']:.2f}× → {verdict} (rule: ≥ {INT8_MIN_CATEGORY_AGREEMENT:.0%})."
        )
    moto = results.get("batch_moto", {})
    if "calling_thread_storage_ms_per_photo" in moto:
        waits = ", ".join(f"{k} {v:.1f}" for k, v in moto["calling_thread_storage_ms_per_photo"].items())
        out.append(
            "- Nightly on moto: storage time per photo (ms; the get on the inference thread, add and archive on "
            f"the I/O pool): {waits} (moto's own CPU shares our 2 vCPUs)."
        )
    warm = results.get("predict_warm", {})
    if "parts_ms" in warm:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in warm["parts_ms"].items())
        out.append(
            f"- Warm predict photo: {warm['photo']}, {warm['photo_mb']} MB; parts (ms): {parts}. "
            f"The same photo resized by the client ({warm['downsized_photo']}): "
            f"p50 {warm['downsized_memory_store']['p50_ms']:.1f} ms."
        )
    cold = results.get("cold_start", {})
    if "first_request_parts_ms" in cold:
        parts = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in cold["first_request_parts_ms"].items())
        imports = cold["importtime_self_ms_by_package"].get("import", {})
        top = ", ".join(f"{k} {v:.0f}" for k, v in imports.items() if not k.startswith("_"))
        out.append(f"- Cold start, first request (ms): {parts}.")
        out.append(f"- Cold start, handler import by package (-X importtime self ms): {top}.")
    if "snapstart" in results:
        out.extend(snapstart.summary_lines(results["snapstart"]))
    money = results["cost"]
    out.append(
        f"- Cost: Lambda x86_64 ${money['price_per_gb_second_usd']}/GB-s + ${money['price_per_request_usd'] * 1e6:.2f} "
        f"per 1M requests. Time on Lambda = {money['scaling']} = {money['lambda_seconds_per_photo'] * 1000:.1f} ms "
        f"(${money['usd_per_1000']:.5f} per 1,000); the plain {money['by_wall_scaling']} gives "
        f"{money['by_wall_lambda_seconds_per_photo'] * 1000:.1f} ms (${money['by_wall_usd_per_1000']:.5f}), "
        "which assumes both vCPUs were ours all run. The API pays one request per photo: +$0.0002 per 1,000."
    )
    out.append(
        f"- Batch vs naive by CPU time per image (independent of free vCPUs): {s_all['batch_vs_naive_by_cpu_time']}×. "
        "Batch rows store each Result in MemoryResultStore (in memory); the nightly row runs against moto."
    )
    return out
