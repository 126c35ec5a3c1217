"""``midas-ref simulate``: render a calibrant image with known truth (thin wrapper over :mod:`simulate`)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

EPILOG = """\
input: a named scenario (--scenario, see --list), a MIDAS parameter file (-paramFN: NrPixels or
NrPixelsY/Z, px, Lsd, BC, tx/ty/tz, p0-p5, RhoD, Wavelength, SpaceGroup, LatticeConstant, panel keys
NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z, FixPanelID, PanelShiftsFile), or both (the file's keys replace
the scenario's). Options below replace either.

output folder: <Stem>_000001.<ext> (+ dark_000001.<ext>), params.txt for 'midas-ref calibrate -paramFN'
(no geometry unless --perturb), truth.json (true geometry under MIDAS key names, panels, rings),
truth_params.txt, panelshifts_truth.txt (tiled detectors). Details: docs/simulate.md.

examples:
  midas-ref simulate --list
  midas-ref simulate --scenario ge2048 --out sim/ge2048 --seed 1 --perturb
  midas-ref simulate --scenario pilatus2m_noisefree --out sim/p2m --format h5
  midas-ref simulate -paramFN my_params.txt --out sim/mine --fwhm-px 3 --read-noise 4 --dark 100
"""


#: Simulation option (as :class:`simulate.SimulationError` names it) → the flag that sets it.
_FLAGS = {
    "PeakShape.fwhm_px": "--fwhm-px", "PeakShape.fwhm_two_theta_deg": "--fwhm-2theta-deg",
    "PeakShape.lorentz_fraction": "--lorentz-fraction", "PeakShape.doublet_wavelength_angstrom": "--doublet-wavelength",
    "PeakShape.doublet_ratio": "--doublet-ratio", "RingIntensity.peak_counts": "--peak-counts",
    "RingIntensity.weighting": "--weighting", "RingIntensity.texture_amplitude": "--texture AMP",
    "RingIntensity.texture_order": "--texture ORDER", "RingIntensity.texture_phase_deg": "--texture PHASE_DEG",
    "RingIntensity.missing_arcs_deg": "--missing-arc", "DetectorResponse.background_counts": "--background",
    "DetectorResponse.background_slope_per_px": "--background-slope", "DetectorResponse.read_noise_counts":
    "--read-noise", "DetectorResponse.dark_counts": "--dark", "DetectorResponse.dark_noise_counts": "--dark-noise",
    "DetectorResponse.n_frames": "--frames", "DetectorResponse.bad_pixel_fraction": "--bad-fraction",
    "DetectorResponse.bad_pixel_value": "--bad-value", "DetectorResponse.gap_value": "--gap-value",
    "DetectorResponse.dtype": "--dtype", "DetectorResponse.saturation_counts": "--saturation",
    "SimulationConfig.supersample": "--supersample", "SimulationConfig.seed": "--seed",
}
#: Simulation option → the parameter-file key that sets it when its flag (if any) is not given
#: (simulate.from_params reads these keys; the geometry keys are restated by midas_ref.params).
_KEYS = {"Material.wavelength_angstrom": "Wavelength", "Material.lattice": "LatticeConstant",
         "DetectorResponse.bad_pixel_value": "BadPxIntensity", "DetectorResponse.gap_value": "GapIntensity",
         "SimulationConfig.fix_panel_id": "FixPanelID"}


def _in_user_words(exc, args, pf):
    """``exc`` (a :class:`simulate.SimulationError`) with its option names replaced by what the user typed.

    An option set by a flag is named by the flag, one set by the parameter file by its key (and the error
    becomes a ParameterFileError with the file and line when the message is about that key alone). Errors
    that name no option are returned as they are.
    """
    from ..errors import ParameterFileError

    words = {}
    for option in exc.fields:
        flag, key = _FLAGS.get(option), _KEYS.get(option)
        flag_given = flag is not None and getattr(args, flag.split()[0].lstrip("-").replace("-", "_")) is not None
        from_file = key is not None and pf is not None and pf.has(key) and not flag_given
        words[option] = key if from_file else flag
    message = str(exc)
    first = exc.fields[0] if exc.fields else None
    if first is not None and words[first] == _KEYS.get(first) and message.startswith(first):
        key = words[first]
        return ParameterFileError(_replaced(message[len(first):].lstrip(" :"), words, pf), pf.path,
                                  pf.line_of(key), key)
    return type(exc)(_replaced(message, words, pf), exc.fields)


def _replaced(message: str, words: dict, pf) -> str:
    """``message`` with every option replaced by its flag, or by its key and where the file sets it."""
    keys = set(_KEYS.values())
    for option in sorted(words, key=len, reverse=True):
        word = words[option] or option
        if word in keys:
            word = f"{word} on line {pf.line_of(word)} of {pf.path}"
        message = message.replace(option, word)
    return message


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers) -> None:
    """Add the ``simulate`` parser to the CLI's subparsers."""
    p = subparsers.add_parser(
        "simulate", help="render a calibrant image with known truth (scenario presets or a parameter file)",
        description="Render a powder-calibrant detector image through the shared geometry model, with truth.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    src = p.add_argument_group("input and output")
    src.add_argument("--list", action="store_true", help="list the scenario presets and exit")
    src.add_argument("--scenario", metavar="NAME", help="preset name (noise-free form: NAME_noisefree)")
    src.add_argument("-paramFN", "--param-fn", dest="param_fn", metavar="FILE", help="MIDAS parameter file")
    src.add_argument("--panel-shifts", metavar="FILE",
                     help="true per-panel corrections (panelshifts.txt format); default the file's PanelShiftsFile")
    src.add_argument("--out", metavar="DIR", help="output folder (created if missing)")
    src.add_argument("--format", choices=("tif", "ge", "h5", "zarr"), default="tif",
                     help="image format (default tif)")
    src.add_argument("--seed", type=int, help="seed of every random draw (default: the scenario's, 0)")
    src.add_argument("--noise-free", action="store_true",
                     help="no Poisson, read or dark-pattern noise and no bad pixels")
    src.add_argument("--perturb", action="store_true",
                     help="write a start geometry near the truth into params.txt (Lsd ±0.1-0.3 %%, BC ±0.5-2 px, "
                          "tilts and distortion 0)")
    src.add_argument("--supersample", type=_positive_int, metavar="N",
                     help="N x N Gauss-Legendre nodes per pixel near ring centres (default 4)")

    peak = p.add_argument_group("ring profile and intensity")
    width = peak.add_mutually_exclusive_group()
    width.add_argument("--fwhm-px", type=float, metavar="F", help="FWHM in pixels of r (all rings)")
    width.add_argument("--fwhm-2theta-deg", type=float, metavar="F", help="FWHM in 2θ, degrees")
    peak.add_argument("--lorentz-fraction", type=float, metavar="MU", help="pseudo-Voigt Lorentzian fraction 0..1")
    peak.add_argument("--doublet-wavelength", type=float, metavar="ANGSTROM",
                      help="second (Kα2-like) wavelength: every ring drawn again at its 2θ")
    peak.add_argument("--doublet-ratio", type=float, metavar="Q", help="height of the second line (default 0.5)")
    peak.add_argument("--peak-counts", type=float, metavar="A", help="peak height of the brightest ring, counts")
    peak.add_argument("--weighting", choices=("uniform", "multiplicity"), help="ring heights")
    peak.add_argument("--texture", type=float, nargs=3, metavar=("AMP", "ORDER", "PHASE_DEG"),
                      help="ring intensity × (1 + AMP·cos(ORDER·(η − PHASE)))")
    peak.add_argument("--missing-arc", type=float, nargs=2, action="append", metavar=("ETA_START", "ETA_END"),
                      help="η range (degrees, counter-clockwise) without rings; repeatable")
    peak.add_argument("--rings", type=int, nargs="+", metavar="N", help="render only these ring numbers")

    det = p.add_argument_group("background, noise and detector")
    det.add_argument("--background", type=float, metavar="C", help="constant background, counts")
    det.add_argument("--background-slope", type=float, metavar="S", help="background slope, counts per px of r")
    det.add_argument("--read-noise", type=float, metavar="SIGMA", help="Gaussian read noise, counts")
    det.add_argument("--dark", type=float, metavar="LEVEL", help="dark offset, counts; writes a dark frame")
    det.add_argument("--dark-noise", type=float, metavar="SIGMA", help="fixed dark pattern σ, counts")
    det.add_argument("--frames", type=_positive_int, metavar="N", help="frames in the image file")
    det.add_argument("--bad-fraction", type=float, metavar="F", help="fraction of bad pixels")
    det.add_argument("--bad-value", type=float, metavar="V", help="bad-pixel value (default -2)")
    det.add_argument("--gap-value", type=float, metavar="V", help="gap-pixel value (default -1)")
    det.add_argument("--dtype", choices=("uint16", "uint32", "int32", "float32"), help="pixel type")
    det.add_argument("--saturation", type=float, metavar="LEVEL", help="largest stored value, counts")
    p.set_defaults(func=run)


def _list() -> int:
    from simulate import NOISE_FREE_SUFFIX, list_scenarios

    rows = list_scenarios()
    width = max(len(name) for name, _ in rows)
    print(f"{'scenario':<{width}}  description   (each also as <name>{NOISE_FREE_SUFFIX})")
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _changed(obj, **values):
    values = {k: v for k, v in values.items() if v is not None}
    return replace(obj, **values) if values else obj


def _config(args, pf):
    from simulate import PeakShape, RingIntensity, SimulationError, config_from_params, scenario

    if args.scenario is None and args.param_fn is None:
        raise SimulationError("give --scenario NAME or -paramFN FILE (see --list)")
    base = scenario(args.scenario) if args.scenario is not None else None
    peak_values = dict(lorentz_fraction=args.lorentz_fraction, doublet_wavelength_angstrom=args.doublet_wavelength,
                       doublet_ratio=args.doublet_ratio)
    response = {k: v for k, v in dict(
        background_counts=args.background, background_slope_per_px=args.background_slope,
        read_noise_counts=args.read_noise, dark_counts=args.dark, dark_noise_counts=args.dark_noise,
        n_frames=args.frames, bad_pixel_fraction=args.bad_fraction, bad_pixel_value=args.bad_value,
        gap_value=args.gap_value, dtype=args.dtype, saturation_counts=args.saturation).items() if v is not None}
    intensity = {k: v for k, v in dict(
        peak_counts=args.peak_counts, weighting=args.weighting,
        missing_arcs_deg=None if args.missing_arc is None else tuple(tuple(a) for a in args.missing_arc),
        ring_numbers=None if args.rings is None else tuple(args.rings)).items() if v is not None}
    if args.texture is not None:
        amp, order, phase = args.texture
        if order != int(order):
            raise SimulationError(f"texture ORDER must be an integer, got {order}")
        intensity.update(texture_amplitude=amp, texture_order=int(order), texture_phase_deg=phase)
    base_peak = PeakShape() if base is None else base.peak
    base_intensity = RingIntensity() if base is None else base.intensity
    if args.fwhm_px is not None or args.fwhm_2theta_deg is not None:
        base_peak = replace(base_peak, fwhm_px=args.fwhm_px, fwhm_two_theta_deg=args.fwhm_2theta_deg)
    changes = dict(peak=_changed(base_peak, **peak_values), intensity=replace(base_intensity, **intensity))
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.supersample is not None:
        changes["supersample"] = args.supersample
    if args.param_fn is not None:
        config = config_from_params(pf, base, panel_shifts_path=args.panel_shifts, response_changes=response,
                                    **changes)
    else:
        if args.panel_shifts is not None:
            if base.panels is None:
                raise SimulationError(f"scenario {base.name} has no panels; --panel-shifts needs a panel grid")
            from midas_ref.panels import read_panel_shifts

            changes["panels"] = read_panel_shifts(args.panel_shifts, base.panels.layout)
        config = replace(base, response=replace(base.response, **response), **changes)
    return config.noise_free() if args.noise_free else config


def run(args: argparse.Namespace) -> int:
    """Build the configuration, simulate, write the folder, print a summary; returns the exit code."""
    if args.list:
        return _list()
    from simulate import SimulationError, simulate, write_simulation

    if args.out is None:
        raise SimulationError("--out DIR is required")
    from midas_ref.params import read_parameter_file

    pf = read_parameter_file(args.param_fn) if args.param_fn is not None else None
    try:
        config = _config(args, pf)
    except SimulationError as exc:
        if not exc.fields:
            raise
        raise _in_user_words(exc, args, pf) from exc
    start = time.perf_counter()
    result = simulate(config)
    seconds = time.perf_counter() - start
    files = write_simulation(result, args.out, args.format, perturb=args.perturb)
    frames = result.frames
    written = [files.image.name] + [p.name for p in (files.dark, files.panel_shifts) if p is not None]
    written += [files.params.name, files.truth_params.name, files.truth.name]
    on = int(result.rings.on_detector.sum())
    print(f"midas-ref simulate: {config.name} (seed {config.seed}{', noise-free' if config.is_noise_free else ''}"
          f"{', perturbed start' if args.perturb else ''}): {frames.shape[0]} x {frames.shape[1]} x "
          f"{frames.shape[2]} {frames.dtype.name}, {on} rings on the detector, simulated in {seconds:.2f} s")
    print(f"wrote {files.out_dir}: {', '.join(written)}")
    sys.stdout.flush()
    return 0
