"""`python -m course COMMAND`: the instructor's commands, run from the repository root.

Each grading command runs nbgrader in course/ (where nbgrader finds nbgrader_config.py); options this
wrapper does not know are passed on to nbgrader. `autograde` grades each submission in a sandbox, several
at once (course/autograde.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course import GRADING, ROOT, lesson_notebooks, lessons, nbgrader

SUCCESS = "Success! Your notebook passes all the tests."


def _lessons(names: list[str], root: Path = ROOT) -> list[str]:
    known = lessons(root)
    for name in names:
        if name not in known:
            raise SystemExit(f"no lesson {name!r} in assessments/; lessons are: {', '.join(known) or 'none yet'}")
    return names or known


def release(names: list[str], extra: list[str], root: Path = ROOT, **run_kwargs) -> int:
    """Generate the student notebooks of the lessons (default: all) into notebooks/; returns the exit status."""
    for lesson in _lessons(names, root):
        code = nbgrader(["generate_assignment", lesson, "--force", *extra], root=root, **run_kwargs).returncode
        if code:
            return code
    return 0


def validate(names: list[str], extra: list[str], root: Path = ROOT, **run_kwargs) -> int:
    """Validate the source notebooks of the lessons (default: all).

    nbgrader validate prints its verdict and always exits 0; this returns 1 unless every notebook passed.
    """
    paths = [str(p) for lesson in _lessons(names, root) for p in lesson_notebooks(lesson, root)]
    if not paths:
        print("no lessons to validate")
        return 0
    result = nbgrader(["validate", *paths, *extra], root=root, capture_output=True, text=True, **run_kwargs)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return 0 if result.returncode == 0 and result.stdout.count(SUCCESS) == len(paths) else 1


def questions(lesson: str, check: bool, root: Path = ROOT, variant: int | None = None) -> int:
    """Render a lesson's questions.toml into its source notebooks (check: only report what would change).

    ``variant`` (a seed; default: the course setting ``LMLAB_COURSE_VARIANT``, else 0) permutes every
    question's options, for grading with answer letters the public repository does not show.
    """
    from course.questions import render_lesson
    from lmlab.grading import course_variant

    try:
        variant = course_variant() if variant is None else variant
        changed = render_lesson(root / "assessments" / _lessons([lesson], root)[0], check=check, variant=variant)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from course.questions import cue_report, load_questions, permute

    toml = root / "assessments" / lesson / "questions.toml"
    print(f"variant {variant}: {cue_report(permute(load_questions(toml), variant))}")
    for path in changed:
        print(f"{'out of date' if check else 'updated'}: {path.relative_to(root)}")
    if not changed:
        print("question cells are up to date")
    return 1 if check and changed else 0


def wrong(names: list[str], root: Path = ROOT) -> int:
    """Try every wrong solution of the lessons (default: all); 1 if one is missing or not caught."""
    from course.wrong import check_lesson, lesson_problems, report

    status = 0
    for lesson in _lessons(names, root):
        folder = root / "assessments" / lesson
        problems = lesson_problems(folder)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            status = 1
            continue
        outcomes = check_lesson(folder)
        print(f"{lesson}:\n{report(outcomes)}")
        status = status or int(not all(o.caught for o in outcomes))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="generate the student notebooks in notebooks/ (and the gradebook entries)")
    p.add_argument("lessons", nargs="*", help="lesson folders (default: all)")
    p = sub.add_parser("questions", help="render assessments/LESSON/questions.toml into the lesson's notebooks")
    p.add_argument("lesson")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the cells are out of date")
    p.add_argument("--variant", type=int, metavar="SEED", default=None,
                   help="permute each question's options by this seed (0: as in questions.toml; default: "
                        "the LMLAB_COURSE_VARIANT environment variable, else 0)")
    p = sub.add_parser("validate", help="run the source notebooks' tests, visible and hidden")
    p.add_argument("lessons", nargs="*", help="lesson folders (default: all)")
    p = sub.add_parser("collect", help="collect submissions: from LMS exports (Canvas, Moodle: files, folders, "
                                       "zips), else from course/grading/downloaded/LESSON/archive/ (nbgrader "
                                       "zip_collect), or from the exchange with --exchange")
    p.add_argument("lesson")
    p.add_argument("exports", nargs="*", type=Path, help="LMS downloads: files, folders or zip files")
    p.add_argument("--exchange", action="store_true", help="nbgrader collect from the JupyterHub exchange")
    p.add_argument("--deadline", default=None, help="flag submissions after this time ('YYYY-MM-DD HH:MM' UTC; "
                                                    "default: c.ClassGrading.deadlines in nbgrader_config.py)")
    p = sub.add_parser("roster", help="import the class list (CSV: id[, first_name, last_name, email, "
                                      "canvas_id, moodle_id]) so that students who send nothing score 0")
    p.add_argument("csv", type=Path)
    p = sub.add_parser("autograde", help="grade the collected submissions, each in a sandbox, several at once")
    p.add_argument("lesson")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="submissions graded at once (default: the number of cores)")
    p.add_argument("--student", action="append", default=None, metavar="ID",
                   help="grade only this student (repeat for more); regrades")
    p.add_argument("--unsafe", action="store_true",
                   help="grade without a sandbox when bubblewrap is unavailable (only submissions you trust)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock limit of one submission (default: c.ClassGrading.submission_timeout, 600)")
    p = sub.add_parser("feedback", help="write HTML feedback to course/grading/feedback/")
    p.add_argument("lesson")
    p = sub.add_parser("export", help="write the grades to course/grading/grades.csv (nbgrader export), or per "
                                      "exercise and question with --by cell")
    p.add_argument("--by", choices=("lesson", "cell"), default="lesson",
                   help="cell: one column per test cell and question (course/grading/grades-by-cell.csv)")
    p.add_argument("--lesson", action="append", default=None, help="only this lesson (with --by cell)")
    p = sub.add_parser("bench", help="time and peak memory of each source notebook, normal and grading mode; "
                                     "`bench grading`: how fast a generated class is graded")
    p.add_argument("lessons", nargs="*", help="lesson folders (default: all), or `grading`")
    p.add_argument("--student", action="store_true", help="run the student versions in notebooks/ instead")
    p.add_argument("--class", dest="size", type=int, default=30, help="bench grading: submissions (default 30)")
    p.add_argument("--lesson", default=None, help="bench grading: the lesson (default: the built-in example "
                                                  "lesson, which measures grading itself)")
    p.add_argument("--workers", type=int, default=None, help="bench grading: workers (default: one per core)")
    p.add_argument("--sample", type=int, default=5, help="bench grading: submissions also graded unsandboxed")
    p = sub.add_parser("wrong", help="run each exercise's tests against the lesson's wrong solutions "
                                     "(assessments/LESSON/wrong_solutions.toml); exit 1 unless every one is caught")
    p.add_argument("lessons", nargs="*", help="lesson folders (default: all)")
    p = sub.add_parser("site", help="a static website of the course for reading: each student notebook with the "
                                    "outputs of the instructor version, an index in syllabus order with Binder "
                                    "and download links (course/site.py)")
    p.add_argument("lessons", nargs="*", help="lesson folders (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="where to write it (default build/site)")
    p.add_argument("--grading", action="store_true", help="run the notebooks in grading mode (smaller workloads): "
                                                          "a quick preview, not the site to publish")
    p = sub.add_parser("new", help="start a lesson: its source notebook (an example exercise, a question), "
                                   "questions, wrong solutions, lesson package, tests and syllabus entry "
                                   "(course/new.py), released to notebooks/")
    p.add_argument("name", help="the lesson's folder name: two digits, _, lowercase words (e.g. 05_multitoken)")
    p.add_argument("--title", default=None, help="the title shown in the notebook and the syllabus")
    sub.add_parser("nbgrader", help="any other nbgrader command, run in course/ (e.g. `nbgrader db student list`)")

    args, extra = parser.parse_known_args(argv)
    if args.command == "nbgrader":
        return nbgrader(extra).returncode
    if extra and args.command in ("questions", "bench", "wrong", "roster", "site", "new"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "new":
        from course.new import create

        try:
            written = create(args.name, args.title)
        except (ValueError, TypeError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print("created:\n" + "\n".join(f"  {p.relative_to(ROOT)}" for p in written))
        print(f"next: edit assessments/{args.name}/ and lmlab/lessons/, then follow course/authoring.md")
        return 0
    if args.command == "site":
        from course.site import build

        try:
            build(args.out, args.lessons, grading=args.grading)
        except (ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    if args.command == "release":
        return release(args.lessons, extra)
    if args.command == "questions":
        return questions(args.lesson, args.check, variant=args.variant)
    if args.command == "validate":
        return validate(args.lessons, extra)
    if args.command == "wrong":
        return wrong(args.lessons)
    if args.command == "collect":
        lesson = _lessons([args.lesson])[0]
        if not args.exports:
            return nbgrader(["collect" if args.exchange else "zip_collect", lesson, *extra]).returncode
        from course.autograde import settings
        from course.collect import collect, parse_deadline

        text = args.deadline or settings().deadlines.get(lesson)
        try:
            report = collect(lesson, args.exports, deadline=parse_deadline(text) if text else None)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(report.summary())
        return 0
    if args.command == "roster":
        from course.collect import import_roster

        try:
            rows = import_roster(args.csv)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{len(rows)} students in the gradebook; LMS ids kept in {GRADING}/roster.json")
        return 0
    if args.command == "autograde":
        from course.autograde import grade_class, summary

        lesson = _lessons([args.lesson])[0]
        from course.autograde import settings

        outcomes = grade_class(lesson, workers=args.workers, students=args.student, unsafe=args.unsafe,
                               timeout=args.timeout or settings().submission_timeout, extra=extra)
        print(summary(outcomes, lesson))
        return 0 if all(o.status == "graded" for o in outcomes) else 1
    if args.command == "feedback":
        return nbgrader(["generate_feedback", _lessons([args.lesson])[0], *extra]).returncode
    if args.command == "export":
        if args.by == "cell":
            from course.export import export_cells

            print(f"wrote {export_cells(lessons=args.lesson)}")
            return 0
        return nbgrader(["export", *extra]).returncode
    if args.lessons == ["grading"]:
        from course.bench_grading import bench_grading, report

        try:
            print(report(bench_grading(args.size, args.lesson, args.workers, args.sample)))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    from course.bench import bench

    return bench(_lessons(args.lessons), student=args.student)


if __name__ == "__main__":
    sys.exit(main())
