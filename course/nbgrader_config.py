"""nbgrader configuration of the lmlab course (nbgrader 0.9).

nbgrader reads this file when it runs in this folder: `cd course && nbgrader autograde 01_objective`;
`python -m course autograde 01_objective` from the repository root runs that once per submission, several
at once, and reads the ClassGrading settings here too.
Every path below is relative to the repository root, found from this file's location.

    assessments/<lesson>/             source: instructor notebooks (solutions, hidden tests), questions.toml
    notebooks/<lesson>/               release: student notebooks, generated, committed
    course/grading/                   git-ignored: gradebook.db, submitted/, autograded/, feedback/, ...
"""

import sys
from pathlib import Path

from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, Execute, NbGraderPreprocessor

c = get_config()  # noqa: F821 -- provided by traitlets when it loads this file

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the course package: the sandboxed executor of autograde

from course.execute import SafeExecute  # noqa: E402
from course.feedback import hidden_lines, is_test_cell, scrub_hidden_lines  # noqa: E402

GRADING = "course/grading"

c.CourseDirectory.course_id = "lmlab"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "assessments"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = f"{GRADING}/submitted"
c.CourseDirectory.autograded_directory = f"{GRADING}/autograded"
c.CourseDirectory.feedback_directory = f"{GRADING}/feedback"
c.CourseDirectory.solution_directory = f"{GRADING}/solution"
c.CourseDirectory.source_with_tests_directory = f"{GRADING}/source_with_tests"
# several submissions are graded at once, each by its own nbgrader process: wait for the lock, up to 60 s
c.CourseDirectory.db_url = f"sqlite:///{ROOT / GRADING / 'gradebook.db'}?timeout=60"
# Files of a lesson folder other than notebooks are copied to students and into grading;
# questions.toml holds the answers and wrong_solutions.toml the tests' fixtures, so they stay behind.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "questions.toml", "wrong_solutions.toml",
]

# `nbgrader zip_collect`: put submissions in course/grading/downloaded/<lesson>/archive/ as
# <student_id>/<notebook>.ipynb, or as zip files holding that layout.
c.ZipCollectApp.downloaded_directory = f"{GRADING}/downloaded"
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"
# `nbgrader export` writes the grades here unless given --to.
c.ExportPlugin.to = str(ROOT / GRADING / "grades.csv")

# nbgrader's markup, spelled out (these are its defaults).
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# Executing (autograde, validate). A lesson runs in <= 45 s in grading mode, so no correct cell comes
# near this per-cell limit; a cell that runs longer is interrupted and scores 0, and grading goes on.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# Autograde runs each submission's kernel in a sandbox (course/sandbox.py: bubblewrap) with the guard
# around test cells (course/execute.py, lmlab/kernelguard.py). Validate (the students' button) does not.
# The limits of one submission; a lesson needs at most 1.5 GB and 45 s in grading mode.
c.SandboxKernelManager.memory_bytes = 3 << 30        # each process (RLIMIT_DATA)
c.SandboxKernelManager.total_memory_bytes = 4 << 30  # all its processes (memory cgroup, where allowed)
c.SandboxKernelManager.processes = 64                # processes and threads (pids cgroup or RLIMIT_NPROC)
c.SandboxKernelManager.file_bytes = 64 << 20         # any one file it writes
c.SandboxKernelManager.work_bytes = 512 << 20        # its working folder and /tmp (tmpfs)
c.SafeExecute.max_cell_output_bytes = 1 << 20        # output a cell keeps (errors always stay)
c.SafeExecute.max_notebook_output_bytes = 8 << 20
c.SafeExecute.guard_timeout = 20                     # seconds for the guard's answer around a test cell
# Each test cell's results (lmlab.grading.reported, expect_equal, expect_close) are compared in the grader's
# process with the instructor's solution's, from a run of the source notebook (course/reference.py).
c.SafeExecute.compare_results = True
c.SafeExecute.course_root = str(ROOT)
# The class: deadlines flag late submissions when collecting (`python -m course collect LESSON EXPORTS`),
# e.g. {"01_objective": "2026-10-09 23:59"} (UTC, or ISO 8601 with an offset); a submission still
# running after submission_timeout seconds is stopped.
c.ClassGrading.deadlines = {}
c.ClassGrading.submission_timeout = 600
_autograde = Autograde.class_traits()["autograde_preprocessors"].default()
_autograde[_autograde.index(Execute)] = SafeExecute
c.Autograde.autograde_preprocessors = _autograde
# nbgrader scores a test cell 0 when it wrote anything to stderr; warnings and progress bars of
# correct code must not cost points (a failing test raises, and that is recorded as an error).
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"[\s\S]*"
# A submission that deleted a test cell gets it back (and its points are decided by running it).
c.OverwriteCells.add_missing_cells = True


class StudentVersion(NbGraderPreprocessor):
    """Make the released notebook what students should see, and the same on every generation.

    - a solution cell whose metadata has `course.stub` shows that stub (e.g. `answer_q1 = ""`)
      instead of nbgrader's `raise NotImplementedError()`;
    - exercise code cells (solution and test cells) get the `raises-exception` tag, so that "Run all"
      in JupyterLab, nbclient and nbval go on past an exercise the student has not done yet;
    - only stable metadata is kept (no widget state, no editor state, no `course` keys).
    """

    notebook_keys = ("kernelspec", "language_info")
    cell_keys = ("nbgrader", "tags", "editable", "deletable", "jupyter", "slideshow")

    def preprocess(self, nb, resources):
        nb.metadata = {k: nb.metadata[k] for k in self.notebook_keys if k in nb.metadata}
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        grading = cell.metadata.get("nbgrader", {})
        stub = cell.metadata.get("course", {}).get("stub")
        if stub is not None and grading.get("solution"):
            cell.source = stub
        cell.metadata = {k: cell.metadata[k] for k in self.cell_keys if k in cell.metadata}
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
        return cell, resources


class FeedbackWithoutHiddenTests(ClearHiddenTests):
    """Feedback shows no hidden test code: it is cut from the cells, the tracebacks of cells that had
    hidden tests are cut to their last line (IPython tracebacks quote the lines around the error), and
    any output line of any cell that quotes a hidden test line is blanked (a submission can print `In`,
    its caller's source or a file)."""

    def preprocess(self, nb, resources):
        hidden = hidden_lines(nb, self.begin_test_delimeter, self.end_test_delimeter)
        nb, resources = super().preprocess(nb, resources)
        scrub_hidden_lines(nb, hidden)
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        # only test cells hold hidden tests: a student's comment with the marker is left alone
        if is_test_cell(cell) and self._remove_hidden_test_region(cell):
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources


_release = GenerateAssignment.class_traits()["preprocessors"].default()
_release.insert(_release.index(ClearOutput) + 1, StudentVersion)
c.GenerateAssignment.preprocessors = _release

_feedback = GenerateFeedback.class_traits()["preprocessors"].default()
_feedback.insert(1, FeedbackWithoutHiddenTests)  # after GetGrades, which reads the scores
c.GenerateFeedback.preprocessors = _feedback
