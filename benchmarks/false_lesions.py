"""Where the false lesion candidates lie: which tissue they cover and how they look.

    python benchmarks/false_lesions.py --data work_tmp/calib30 \
        --pred work_tmp/s11/c30_base/venous work_tmp/s11/c30_cand/venous [--min-confidence 0.5]

Each synthetic case is made again with its organ map (`synthesis.dataset.remake_case`, which
checks that the labels come out identical). Every lesion of each prediction folder (the
components of `detection_map.nii.gz`) that does not touch a true tumour is a false candidate; for
each it finds the tissue under most of its voxels, the tissue it borders outside the gland, how
much of it lies within 3 mm of the pancreatic duct, and its mean HU against the rest of the gland
in every phase the case has. Why: with the venous phase alone both stage-2 networks of session 11
put confidence-0.9 lesions into about half of the tumour-free glands; what they sit on (duct,
splenic vein, duodenum, the gland's edge) decides the fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GLAND_MARGIN_MM = 3.0  # what counts as "beside" the duct and as the lesion's surroundings


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from PancreasAILib.synthesis.anatomy import Organ
    from PancreasAILib.synthesis.dataset import remake_case

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a `pancreasai synth` dataset")
    parser.add_argument("--pred", type=Path, nargs="+", required=True, help="`segment --batch` folders on it")
    parser.add_argument("--cases", nargs="+", help="case names (default: all)")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="list only lesions this confident")
    parser.add_argument("--anatomy", type=Path, help="anatomy folder (default: the one the dataset records)")
    parser.add_argument("--json", type=Path, help="also write every lesion's record here")
    args = parser.parse_args(argv)

    gland_organs = [Organ.PANCREAS, Organ.PANCREATIC_DUCT]
    names = args.cases or sorted(p.stem for p in (args.data / "cases").glob("*.json"))
    records: list[dict] = []
    for name in names:
        case = remake_case(args.data, name, anatomy=args.anatomy)
        organs = sitk.GetArrayFromImage(case.organs)
        spacing = np.asarray(case.labels.GetSpacing())[::-1]
        gland = np.isin(organs, gland_organs)
        tumour = organs == Organ.TUMOUR
        near_duct = (
            ndi.distance_transform_edt(organs != Organ.PANCREATIC_DUCT, sampling=spacing) <= GLAND_MARGIN_MM
        )
        images = {p.value: sitk.GetArrayFromImage(img).astype(np.float32) for p, img in case.phases.items()}
        gland_hu = {p: float(np.median(a[gland])) for p, a in images.items()}
        shell_radius = np.maximum(np.round(GLAND_MARGIN_MM / spacing).astype(int), 1)
        for pred in args.pred:
            detection_img = sitk.ReadImage(str(pred / name / "detection_map.nii.gz"))
            detection_img = sitk.Resample(
                detection_img, case.labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0
            )
            detection = sitk.GetArrayFromImage(detection_img)
            components, _ = ndi.label(detection > 0)
            for index, box in enumerate(ndi.find_objects(components), start=1):
                grown = tuple(
                    slice(max(b.start - r, 0), b.stop + r) for b, r in zip(box, shell_radius, strict=True)
                )
                lesion = components[grown] == index
                confidence = float(detection[grown][lesion].max())
                if confidence < args.min_confidence:
                    continue
                on_tumour = bool(tumour[grown][lesion].any())
                under = Counter(Organ(int(v)).name.lower() for v in organs[grown][lesion])
                structure = np.ones((3, 3, 3), bool)
                shell = ndi.binary_dilation(lesion, structure, iterations=int(shell_radius.max())) & ~lesion
                around = organs[grown][shell]
                around = around[~np.isin(around, [*gland_organs, Organ.TUMOUR, Organ.FAT])]
                beside = Counter(Organ(int(v)).name.lower() for v in around).most_common(2)
                records.append(
                    {
                        "prediction": str(pred),
                        "case": name,
                        "case_has_tumour": bool(tumour.any()),
                        "true": on_tumour,
                        "confidence": round(confidence, 3),
                        "volume_ml": round(float(lesion.sum() * np.prod(spacing) / 1000.0), 2),
                        "under": under.most_common(1)[0][0],
                        "in_gland": round(float(gland[grown][lesion].mean()), 2),
                        "near_duct": round(float(near_duct[grown][lesion].mean()), 2),
                        "beside": [b for b, _ in beside],
                        "contrast_hu": {
                            p: round(float(a[grown][lesion].mean()) - gland_hu[p], 1)
                            for p, a in images.items()
                        },
                    }
                )
    print_table(records, args.pred)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


def print_table(records: list[dict], preds: list[Path]) -> None:
    print(
        f"{'prediction':40s} {'case':12s} {'tumour?':7s} {'conf':>5s} {'mL':>6s} {'under':16s} "
        f"{'in gland':>8s} {'by duct':>7s}  beside                          contrast HU (a/v/d)"
    )
    for r in records:
        if r["true"]:
            continue
        contrast = "/".join(
            f"{r['contrast_hu'].get(p, float('nan')):+.0f}" for p in ("arterial", "venous", "delayed")
        )
        print(
            f"{Path(r['prediction']).parent.name + '/' + Path(r['prediction']).name:40s} {r['case']:12s} "
            f"{'yes' if r['case_has_tumour'] else 'no':7s} {r['confidence']:5.2f} {r['volume_ml']:6.2f} "
            f"{r['under']:16s} {r['in_gland']:8.2f} {r['near_duct']:7.2f}  {', '.join(r['beside']):30s}  {contrast}"
        )
    print()
    print(
        f"{'prediction':40s} {'true':>5s} {'false':>6s} {'false >=0.5':>11s} {'mean in gland':>13s} {'by duct':>8s}  most often under / beside"
    )
    for pred in preds:
        mine = [r for r in records if r["prediction"] == str(pred)]
        false = [r for r in mine if not r["true"]]
        strong = [r for r in false if r["confidence"] >= 0.5]
        under = Counter(r["under"] for r in strong).most_common(3)
        beside = Counter(b for r in strong for b in r["beside"][:1]).most_common(3)
        mean = lambda key, rows: sum(r[key] for r in rows) / len(rows) if rows else float("nan")  # noqa: E731
        print(
            f"{pred.parent.name + '/' + pred.name:40s} {len(mine) - len(false):5d} {len(false):6d} {len(strong):11d} "
            f"{mean('in_gland', strong):13.2f} {mean('near_duct', strong):8.2f}  {under} / {beside}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
