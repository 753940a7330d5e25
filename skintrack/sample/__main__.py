"""`python -m skintrack.sample [DIR]`: regenerate the SIMULATED sample trial (default data/sample-trial)."""
import argparse

from .simulate import simulate_trial

parser = argparse.ArgumentParser(prog="python -m skintrack.sample",
                                 description="Write the SIMULATED sample trial (responses, manifest, subjects).")
parser.add_argument("folder", nargs="?", default="data/sample-trial", help="where to write it (default: %(default)s)")
parser.add_argument("--seed", type=int, default=20241108, help="random seed (default: %(default)s)")
parser.add_argument("--subjects", type=int, default=24, help="number of subjects (default: %(default)s)")
args = parser.parse_args()
if args.folder.startswith("-"):
    parser.error(f"{args.folder!r} looks like an option, not a folder")
print(simulate_trial(args.folder, seed=args.seed, subjects=args.subjects))
