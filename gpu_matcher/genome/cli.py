"""``lstmvis convert-fasta``, ``add-bed``, ``add-bigwig``: a genome project and its tracks (docs/genomics.md).

Imports nothing of the ``genomics`` extra until a command runs (``gpu_matcher.genome.require``).
"""

from __future__ import annotations

import time


def cmd_convert_fasta(args) -> int:
    from gpu_matcher.genome.fasta import convert_fasta, genome_section_summary

    t0 = time.perf_counter()
    out = convert_fasta(args.fasta, args.out, format=args.format, chunk=args.chunk, progress=not args.quiet,
                        overwrite=args.overwrite)
    seconds = time.perf_counter() - t0
    from gpu_matcher.project import open_project

    project = open_project(out)
    genome, T = project.genome, project.T
    store = project.config["files"]["genome"]
    project.close()
    section = genome_section_summary(out)
    skipped = section.get("skipped_empty") or []
    print(f"genome project written: {out} ({store}): {T:,} bases in {len(genome)} contigs, "
          f"{int(section.get('soft_masked', 0)):,} soft-masked bases folded to upper case"
          + (f", {len(skipped)} empty contigs skipped" if skipped else "")
          + f"; {seconds:.1f} s ({T / max(seconds, 1e-9) / 1e6:.1f} Mbases/s)")
    return 0


def cmd_add_bed(args) -> int:
    from gpu_matcher.genome.tracks import add_bed

    done = add_bed(args.project_dir, args.name, args.file, kind="narrowPeak" if args.narrowpeak else "bed",
                   overwrite=args.overwrite)
    print(f"track {args.name}: {done['intervals']:,} intervals ({done['overlapping']:,} overlapping an "
          f"earlier one, at most {done['max_depth']} on one base) in {done['file']}")
    return 0


def cmd_add_bigwig(args) -> int:
    from gpu_matcher.genome.tracks import add_bigwig

    done = add_bigwig(args.project_dir, args.name, args.file, overwrite=args.overwrite)
    lo, hi = done["range"]
    print(f"track {args.name}: bigWig over {done['contigs']} contigs, values {lo:g}..{hi:g}, in {done['file']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert-fasta", help="a FASTA genome -> a genome project (bases as the timeline, "
                                             "one sequence per contig; needs the genomics extra)")
    p.add_argument("fasta", help="GENOME.fa (plain, or bgzip-compressed with Biopython installed); never modified")
    p.add_argument("out", help="the project folder to write")
    p.add_argument("--format", choices=["auto", "h5", "zarr"], default="auto",
                   help="storage of the bases (auto: Zarr from 10^8 bases, HDF5 below)")
    p.add_argument("--chunk", type=int, default=1 << 22, help="bases per storage chunk (default 2^22)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert_fasta)

    p = _track_command(sub, "add-bed", "a BED / narrowPeak file as an interval track of a genome project",
                       "FILE.bed or FILE.narrowPeak", cmd_add_bed)
    p.add_argument("--narrowpeak", action="store_true", help="read the ENCODE narrowPeak columns")
    _track_command(sub, "add-bigwig", "a bigWig file as a scalar track of a genome project",
                   "FILE.bw (hard-linked or copied into the project's tracks/)", cmd_add_bigwig)


def _track_command(sub, command: str, help: str, file_help: str, func):
    """The arguments every track-adding command takes."""
    p = sub.add_parser(command, help=help)
    p.add_argument("project_dir", help="the genome project folder (holds lstm.yml)")
    p.add_argument("name", help="the track's name")
    p.add_argument("file", help=file_help)
    p.add_argument("--overwrite", action="store_true", help="replace a track of the same name")
    p.set_defaults(func=func)
    return p
