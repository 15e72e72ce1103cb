"""Lesson code: one package per lesson, named after it, with its experiments, figures and widgets.

Lessons use only public names of the library and never import each other; the library never imports
them. No graded answer lives here: an exercise's solution exists only in its source notebook.
"""
