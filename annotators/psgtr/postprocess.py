"""PSGTR post-processing for one image, as OpenPSG's `get_bboxes` computes it: top-k triplets by
predicate probability, mask-IoU triplet dedup, keep filter, stuff/thing merging, pixel-argmax survival.

Reproduces OpenPSG's `_get_bboxes_single` + `triplet2Result(eval_pan_rels=True)` exactly
(shared/fixtures/psgtr) when `PostprocessConfig(class_131_quirk=True, mask_resize="stretch")`.
All arithmetic is float32 torch, in the original's order, so floats match bit for bit.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

INSTANCE_OFFSET = 1000
MASK_RESIZES = ("stretch", "aligned")


@dataclass(frozen=True)
class PostprocessConfig:
    max_triplets: int = 100              # top-k (query, predicate) pairs by predicate probability
    mask_threshold: float = 0.85         # sigmoid > this = binary mask
    dedup_iou: float = 0.5               # triplet dedup / thing merge: IoU strictly above this
    object_score_threshold: float = 0.5  # keep filter: subject and object class score >
    relation_score_threshold: float = 0.3  # keep filter: predicate probability >
    num_things: int = 80
    # OpenPSG compares 1-based labels with num_classes - 1 and so drops class 131 'wall-other-merged'.
    class_131_quirk: bool = False
    # 'stretch': resize the whole padded stride-4 grid to the output size (OpenPSG; misaligned when
    # padded). 'aligned': sample only the image's own region (pixel centres).
    mask_resize: str = "aligned"

    def __post_init__(self):
        if self.max_triplets < 1:
            raise ValueError(f"max_triplets must be >= 1, got {self.max_triplets}")
        for name in ("mask_threshold", "dedup_iou", "object_score_threshold", "relation_score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.mask_resize not in MASK_RESIZES:
            raise ValueError(f"mask_resize must be one of {MASK_RESIZES}, got {self.mask_resize!r}")


@dataclass
class TripletResult:
    """OpenPSG's outputs for one image; names as in the fixtures (`res_*` / `gbs_*`)."""
    refine_bboxes: torch.Tensor      # (2K, 5) xyxy in output pixels + class score; not aligned with labels
    complete_labels: torch.Tensor    # (2K,) 1-based, before the panoptic stage
    rel_pairs: torch.Tensor          # (K, 2) int32
    output_masks: torch.Tensor       # (2K, H0, W0) bool
    complete_r_labels: torch.Tensor  # (K,)
    complete_r_dists: torch.Tensor   # (K, P+1)
    labels: torch.Tensor             # (S,) 1-based segment labels
    scores: torch.Tensor             # (S,) best class score among the entries merged into the segment
    rel_pair_idxes: torch.Tensor     # (R, 2) int32, indices into labels/masks
    rel_dists: torch.Tensor          # (R, P+1), column 0 = no relation
    rel_labels: torch.Tensor         # (R,) 1-based predicates
    pan_results: torch.Tensor        # (H0, W0) segment * 1000 + 0-based label
    masks: torch.Tensor              # (S, H0, W0) bool; int64 ones (1, H0, W0) when empty
    rels: torch.Tensor               # (R, 3); [[0, 0, 0]] when R == 0
    empty: bool                      # nothing passed the keep filter (labels/masks are placeholders)


def resize_masks(logits: torch.Tensor, out_size: tuple[int, int], img_shape: tuple[int, int],
                 mode: str) -> torch.Tensor:
    """(N, Hm, Wm) stride-4 logits of the padded input -> (N, H0, W0)."""
    if mode == "stretch":
        return F.interpolate(logits.unsqueeze(1), size=out_size).squeeze(1)
    hm, wm = logits.shape[-2:]
    rows = (torch.arange(out_size[0], dtype=torch.float64) + 0.5) * img_shape[0] / out_size[0] / 4
    cols = (torch.arange(out_size[1], dtype=torch.float64) + 0.5) * img_shape[1] / out_size[1] / 4
    rows, cols = rows.long().clamp_(max=hm - 1), cols.long().clamp_(max=wm - 1)
    return logits[:, rows.to(logits.device)][:, :, cols.to(logits.device)]


def pairwise_iou(masks: torch.Tensor) -> torch.Tensor:
    """(N, P) float 0/1 masks -> (N, N) IoU, 0/0 = NaN. Counts are exact integers in float32 (< 2**24
    pixels), so each entry equals OpenPSG's per-pair `inter / union` bit for bit."""
    inter = masks.mm(masks.transpose(0, 1))
    area = masks.sum(1)
    return inter / (area[:, None] + area[None, :] - inter)


def _greedy_groups(ids: list[int], iou: torch.Tensor, threshold: float, partner: torch.Tensor | None = None):
    """Greedy: the first remaining id absorbs every other whose IoU (and partner IoU) with it > threshold."""
    while ids:
        base, rest = ids[0], ids[1:]
        absorbed, left = [base], []
        if rest:
            ious = iou[base, rest].tolist()
            partner_ious = partner[base, rest].tolist() if partner is not None else ious
            for a, b, other in zip(ious, partner_ious, rest):
                (absorbed if a > threshold and b > threshold else left).append(other)
        yield absorbed
        ids = left


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.split((1, 1, 1, 1), dim=-1)
    return torch.cat([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def _rescaled_boxes(boxes, scores, img_shape, scale_factor):
    boxes = _cxcywh_to_xyxy(boxes)
    boxes[:, 0::2] = boxes[:, 0::2] * img_shape[1]
    boxes[:, 1::2] = boxes[:, 1::2] * img_shape[0]
    boxes[:, 0::2].clamp_(min=0, max=img_shape[1])
    boxes[:, 1::2].clamp_(min=0, max=img_shape[0])
    boxes /= scale_factor.to(boxes)
    return torch.cat((boxes, scores.unsqueeze(1)), -1)


def postprocess(s_cls: torch.Tensor, o_cls: torch.Tensor, r_cls: torch.Tensor,
                s_boxes: torch.Tensor, o_boxes: torch.Tensor, s_masks: torch.Tensor, o_masks: torch.Tensor,
                img_shape: tuple[int, int], scale_factor,
                cfg: PostprocessConfig = PostprocessConfig()) -> TripletResult:
    """One image. s_cls/o_cls (Q, C+1) logits, r_cls (Q, P+1), boxes (Q, 4) sigmoid cxcywh, masks (Q, Hm, Wm)
    logits; img_shape (h', w') resized unpadded; scale_factor (w'/w, h'/h, w'/w, h'/h) float32."""
    scale_factor = torch.as_tensor(scale_factor, dtype=torch.float32)
    mask_size = (round(img_shape[0] / float(scale_factor[1])), round(img_shape[1] / float(scale_factor[0])))
    num_pred = r_cls.shape[-1] - 1

    # 3.1 scoring and top-k (query, predicate) pairs
    s_probs = F.softmax(s_cls, dim=-1)[..., :-1]
    o_probs = F.softmax(o_cls, dim=-1)[..., :-1]
    s_scores, s_labels = s_probs.max(-1)
    o_scores, o_labels = o_probs.max(-1)
    r_lgs = F.softmax(r_cls, dim=-1)
    r_scores, r_index = r_lgs[..., 1:].reshape(-1).topk(min(cfg.max_triplets, r_lgs[..., 1:].numel()))
    r_labels = r_index % num_pred + 1
    query = r_index // num_pred
    s_scores, s_labels, s_boxes = s_scores[query], s_labels[query] + 1, s_boxes[query]
    o_scores, o_labels, o_boxes = o_scores[query], o_labels[query] + 1, o_boxes[query]
    r_dists = r_lgs.reshape(-1, num_pred + 1)[query]

    # 3.2 triplet dedup on binary masks
    s_logit_maps = resize_masks(s_masks[query], mask_size, img_shape, cfg.mask_resize)
    o_logit_maps = resize_masks(o_masks[query], mask_size, img_shape, cfg.mask_resize)
    s_bin = torch.sigmoid(s_logit_maps) > cfg.mask_threshold
    o_bin = torch.sigmoid(o_logit_maps) > cfg.mask_threshold
    groups = defaultdict(list)
    for k, key in enumerate(zip(s_labels.tolist(), o_labels.tolist(), r_labels.tolist())):
        groups[key].append(k)
    s_iou, o_iou = pairwise_iou(s_bin.float().flatten(1)), pairwise_iou(o_bin.float().flatten(1))
    keep_tri = torch.ones_like(r_labels, dtype=torch.bool)
    for ids in groups.values():
        for absorbed in _greedy_groups(ids, s_iou, cfg.dedup_iou, partner=o_iou):
            keep_tri[absorbed[1:]] = False
    k_count = int(keep_tri.sum())

    # 3.3 boxes in output pixels
    s_det = _rescaled_boxes(s_boxes, s_scores, img_shape, scale_factor)
    o_det = _rescaled_boxes(o_boxes, o_scores, img_shape, scale_factor)

    s_labels, o_labels, r_labels, r_scores, r_dists = (
        t[keep_tri] for t in (s_labels, o_labels, r_labels, r_scores, r_dists))
    s_scores, o_scores = s_scores[keep_tri], o_scores[keep_tri]
    s_bin, o_bin = s_bin[keep_tri], o_bin[keep_tri]
    result = dict(
        refine_bboxes=torch.cat((s_det[keep_tri], o_det[keep_tri]), 0),
        complete_labels=torch.cat((s_labels, o_labels), 0),
        rel_pairs=torch.arange(k_count * 2, dtype=torch.int).reshape(2, -1).T,
        output_masks=torch.cat((s_bin, o_bin), 0),
        complete_r_labels=r_labels, complete_r_dists=r_dists)

    # 3.4 panoptic stage
    keep = (s_scores > cfg.object_score_threshold) & (o_scores > cfg.object_score_threshold) \
        & (r_scores > cfg.relation_score_threshold)
    if cfg.class_131_quirk:
        background = s_probs.shape[-1] - 1  # meant as background, but 1-based: drops 0-based class 131
        keep &= (s_labels != background) & (o_labels != background)
    num_kept = int(keep.sum())
    if num_kept == 0:
        pan_img = torch.ones(mask_size, dtype=torch.long)
        return TripletResult(
            **result, labels=torch.tensor([1]), scores=torch.zeros(1),
            rel_pair_idxes=torch.zeros((0, 2), dtype=torch.int),
            rel_dists=r_dists.new_zeros((0, num_pred + 1)), rel_labels=torch.zeros(0, dtype=torch.long),
            pan_results=pan_img, masks=pan_img.unsqueeze(0), rels=torch.zeros((1, 3), dtype=torch.long), empty=True)

    labels0 = torch.cat((s_labels[keep], o_labels[keep]), 0) - 1  # (N,) 0-based
    entry_scores = torch.cat((s_scores[keep], o_scores[keep]), 0)
    logits = torch.cat((s_logit_maps[keep_tri][keep], o_logit_maps[keep_tri][keep]), 0)  # (N, H0, W0)
    entry_iou = pairwise_iou(torch.cat((s_bin[keep], o_bin[keep]), 0).float().flatten(1))
    rep = list(range(len(labels0)))
    by_class = defaultdict(list)
    for i, label in enumerate(labels0.tolist()):
        by_class[label].append(i)
    for label, ids in by_class.items():
        if label >= cfg.num_things:  # stuff: one segment per class
            for i in ids:
                rep[i] = ids[0]
        else:
            for absorbed in _greedy_groups(ids, entry_iou, cfg.dedup_iou):
                for i in absorbed:
                    rep[i] = absorbed[0]
    rep_t = torch.tensor(rep, dtype=torch.long)
    winner = logits.flatten(1).transpose(0, 1).softmax(-1).argmax(-1)  # (H0*W0,) ties -> lowest index
    segment_of_pixel = rep_t[winner]
    present = torch.unique(segment_of_pixel)  # sorted
    rank = torch.full((len(rep),), -1, dtype=torch.long)
    rank[present] = torch.arange(len(present))
    pairs = torch.stack((rep_t[:num_kept], rep_t[num_kept:]), 1)  # (M, 2)
    alive = (rank[pairs] >= 0).all(1)
    rel_pair_idxes = rank[pairs[alive]].to(torch.int)
    rel_labels, rel_dists = r_labels[keep][alive], r_dists[keep][alive]
    seg = rank[segment_of_pixel].view(mask_size)
    pan_labels = labels0[present]
    entry_segment = rank[rep_t]
    counted = entry_segment >= 0
    seg_scores = torch.zeros(len(present)).scatter_reduce_(
        0, entry_segment[counted], entry_scores[counted].float(), "amax", include_self=False)
    rels = torch.cat((rel_pair_idxes.long(), rel_labels.unsqueeze(1)), 1) if len(rel_labels) \
        else torch.zeros((1, 3), dtype=torch.long)
    return TripletResult(
        **result, labels=pan_labels + 1, scores=seg_scores, rel_pair_idxes=rel_pair_idxes, rel_dists=rel_dists,
        rel_labels=rel_labels, pan_results=seg * INSTANCE_OFFSET + pan_labels[seg],
        masks=seg.unsqueeze(0) == torch.arange(len(present)).view(-1, 1, 1), rels=rels, empty=False)
