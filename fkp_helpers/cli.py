"""The ``fkp`` command: data, training, submissions and predictions on photos.

    fkp data download [--data-dir DIR]       get Kaggle's files (Kaggle's own CLI/package)
    fkp data info [--data-dir DIR]           which data is in force, counts, missing labels
    fkp train --data-dir DIR --profile full --out DIR [--minutes M | --epochs N]
    fkp submit --model DIR/model.keras --data-dir DIR --out submission.csv
    fkp score SUBMISSION SOLUTION            Kaggle's RMSE of a submission against answers
    fkp predict PHOTO --model model.keras --out annotated.png
    fkp export --model model.keras --out DIR   the model as ONNX, for runtimes outside Python

Errors about the user's input print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _silence_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_data_download(args: argparse.Namespace) -> int:
    from fkp_helpers import data

    return data.download(args.data_dir)


def _cmd_data_info(args: argparse.Namespace) -> int:
    import numpy as np

    from fkp_helpers import data

    d = data.data_dir(args.data_dir)
    train = data.load_training(d)
    test = data.load_test(d)
    complete = int((~np.isnan(train.keypoints).any(axis=1)).sum())
    print(f"data directory: {d} ({train.source})")
    print(f"training: {len(train)} faces, {complete} with all 15 keypoints ({train.path.name})")
    print(f"test: {len(test)} faces ({test.path.name})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    _silence_tf()
    from fkp_helpers import experiments

    metrics = experiments.train_cli(
        data_dir=args.data_dir,
        profile=args.profile,
        out=args.out,
        seed=args.seed,
        precision=args.precision,
        minutes=args.minutes,
        epochs=args.epochs,
        started=args.started,
    )
    keys = (
        "val_rmse",
        "baseline_val_rmse",
        "test_rmse",
        "baseline_test_rmse",
        "train_seconds",
        "wall_seconds",
        "epochs_run",
    )
    print(json.dumps({k: metrics[k] for k in keys}))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    _silence_tf()
    from fkp_helpers import experiments

    experiments.submit_cli(
        model_path=args.model,
        data_dir=args.data_dir,
        out=args.out,
        flip_average=args.flip,
        second_look=args.second_look,
        offset=args.offset,
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from fkp_helpers import evaluate

    score = evaluate.score_submission_files(args.submission, args.solution)
    print(f"RMSE: {score:.4f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    _silence_tf()
    from fkp_helpers import photo

    faces = photo.predict_cli(args.photo, model_path=args.model, out=args.out)
    print(json.dumps(faces, indent=2))
    return 0


def _cmd_export(args) -> int:
    from fkp_helpers import export

    info = export.export_cli(args.model, args.out)
    print(json.dumps(info["measured"], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fkp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    pd_ = sub.add_parser("data", help="get or inspect the data")
    dsub = pd_.add_subparsers(dest="data_command", required=True)
    d1 = dsub.add_parser("download", help="download Kaggle's files (or print how to)")
    d1.add_argument(
        "--data-dir", default=None, help="target directory (default $FKP_DATA_DIR or ./data)"
    )
    d1.set_defaults(func=_cmd_data_download)
    d2 = dsub.add_parser("info", help="which data is in force, with counts")
    d2.add_argument("--data-dir", default=None)
    d2.set_defaults(func=_cmd_data_info)

    t = sub.add_parser("train", help="train the keypoint model")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--profile", default="full", choices=["quick", "compare", "full"])
    t.add_argument(
        "--out", required=True, help="output directory for model.keras, history, metrics.json"
    )
    t.add_argument("--seed", type=int, default=None)
    length = t.add_mutually_exclusive_group()
    length.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-time budget for the whole command (the full profile: 18); the schedule is "
        "laid out over the epochs that fit on this machine",
    )
    length.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="exactly this many epochs, no budget (repeatable from CPU to CPU; "
        "a GPU trains larger batches)",
    )
    t.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policy (default: chosen from the hardware, and printed)",
    )
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("submit", help="predict the test set and write Kaggle's submission")
    s.add_argument("--model", required=True, help="path to model.keras")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--out", default="submission.csv")
    s.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored face's prediction (default: what the training run chose; "
        "--no-flip: one look, without the second look)",
    )
    s.add_argument(
        "--second-look",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="predict again, aligned by the predicted eyes, the faces beyond the training "
        "augmentation's range; flip-averaged (default: what the training run chose)",
    )
    s.add_argument(
        "--offset",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subtract the labels' offset that the training run measured on its training faces "
        "(flip-averaged looks only; default: what the training run chose)",
    )
    s.set_defaults(func=_cmd_submit)

    sc = sub.add_parser("score", help="score a submission against a solution file (RowId,Location)")
    sc.add_argument("submission")
    sc.add_argument("solution")
    sc.set_defaults(func=_cmd_score)

    pr = sub.add_parser("predict", help="find faces in a photo and draw their keypoints")
    pr.add_argument("photo")
    pr.add_argument("--model", required=True)
    pr.add_argument("--out", default=None, help="annotated PNG to write")
    pr.set_defaults(func=_cmd_predict)

    ex = sub.add_parser(
        "export",
        help="write the model as ONNX (float32) and the JSON a runtime outside Python needs",
    )
    ex.add_argument("--model", required=True, help="path to model.keras")
    ex.add_argument("--out", required=True, help="directory for model.onnx and fkp-model.json")
    ex.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.time()  # a training budget counts from here: imports and loading included
    args = build_parser().parse_args(argv)
    args.started = started
    from fkp_helpers.data import FKPDataError

    try:
        return int(args.func(args) or 0)
    except (FKPDataError, OSError, ValueError) as e:  # OSError: a missing file, a folder, ...
        print(f"fkp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fkp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
