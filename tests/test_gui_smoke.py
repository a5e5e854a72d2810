"""The plain main window opens offscreen."""

from sdesr_gui.gui.app import MainWindow


def test_main_window_opens(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    assert "SDE-SR Studio" in win.windowTitle()
