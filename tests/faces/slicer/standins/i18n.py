"""Stand-in for ``slicer.i18n`` of the 3D Slicer application, written for this project's tests:
translation returns the source text (the application looks it up in its Qt translation files)."""


def translate(context, text):
    return text


def tr(text):
    return text


def getContext(sourceFile):
    return sourceFile
