"""Render the Slicer module panel from PancreasAI/Resources/UI/PancreasAI.ui into a PNG, without Slicer.

    pip install PySide6-Essentials            # in any throwaway environment
    QT_QPA_PLATFORM=offscreen python scripts/render_module_panel.py [--out docs/slicer_module_panel.png]

The .ui file is loaded as it is; the Slicer/CTK widgets it names (qMRMLNodeComboBox, ctkSliderWidget,
ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget) are replaced by small Qt stand-ins that look alike.
The panel is filled with example values (a finished run) so the picture shows the results section.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QFile, Qt
from PySide6.QtGui import QBrush, QColor, QLinearGradient, QPainter, QPixmap
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSlider,
    QTableWidgetItem,
    QToolButton,
    QWidget,
)

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "PancreasAI" / "Resources" / "UI" / "PancreasAI.ui"
HEATMAP_ANCHORS = [
    (0.0, 0.0, 0.0),
    (0.34, 0.06, 0.43),
    (0.73, 0.21, 0.33),
    (0.98, 0.55, 0.04),
    (0.99, 1.0, 0.64),
]


class qMRMLWidget(QWidget):  # the class names must match those the .ui file names
    pass


class ctkCollapsibleButton(QGroupBox):
    pass


class qMRMLNodeComboBox(QComboBox):
    pass


class ctkPathLineEdit(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit(self)
        layout.addWidget(self.edit)
        button = QToolButton(self)
        button.setText("…")
        layout.addWidget(button)


class ctkSliderWidget(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 100)
        self.spin = QDoubleSpinBox(self)
        self.spin.setRange(0.0, 1.0)
        self.spin.setSingleStep(0.05)
        layout.addWidget(self.slider)
        layout.addWidget(self.spin)

    def set_value(self, value: float) -> None:
        self.slider.setValue(round(100 * value))
        self.spin.setValue(value)


def legend() -> QPixmap:
    pixmap = QPixmap(160, 12)
    painter = QPainter(pixmap)
    gradient = QLinearGradient(0, 0, 160, 0)
    for n, (r, g, b) in enumerate(HEATMAP_ANCHORS):
        gradient.setColorAt(n / (len(HEATMAP_ANCHORS) - 1), QColor(int(255 * r), int(255 * g), int(255 * b)))
    painter.fillRect(0, 0, 160, 12, QBrush(gradient))
    painter.end()
    return pixmap


def load_panel() -> QWidget:
    loader = QUiLoader()
    for cls in (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, ctkPathLineEdit, ctkSliderWidget):
        loader.registerCustomWidget(cls)
    ui_file = QFile(str(UI_FILE))
    ui_file.open(QFile.OpenModeFlag.ReadOnly)
    panel = loader.load(ui_file)
    ui_file.close()
    if panel is None:
        raise SystemExit(f"Could not load {UI_FILE}: {loader.errorString()}")
    return panel


def fill_example(panel: QWidget) -> None:
    """A finished run on a three-phase case, as a radiologist would see it."""
    for box in panel.findChildren(ctkCollapsibleButton):
        box.setTitle(str(box.property("text") or ""))
        if box.property("collapsed"):
            for child in box.findChildren(QWidget):
                child.hide()
    names = {
        "arterialSelector": "CT Pancreas arterial 1.0 mm",
        "venousSelector": "CT Abdomen venous 1.0 mm",
        "delayedSelector": "CT Abdomen delayed 3.0 mm",
    }
    for name, text in names.items():
        panel.findChild(QComboBox, name).addItem(text)
    panel.findChild(QLabel, "phaseStatusLabel").setText(
        "Phase identification: arterial 0.92, venous 0.88, delayed 0.81."
    )
    panel.findChild(QLabel, "stageLabel").setText("Finished.")
    panel.findChild(QWidget, "progressBar").setValue(1000)
    panel.findChild(QWidget, "segmentButton").setEnabled(True)
    panel.findChild(QLabel, "pdacLikelihoodLabel").setText("83 %")
    table = panel.findChild(QWidget, "lesionTableWidget")
    rows = [("L1", "2.41", "19.6", "0.91"), ("L2", "0.18", "6.3", "0.34")]
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(value))
    table.verticalHeader().hide()  # as the module does in setup()
    table.horizontalHeader().setStretchLastSection(True)
    table.resizeColumnsToContents()
    table.setMaximumHeight(100)
    panel.findChild(ctkSliderWidget, "heatmapOpacitySlider").set_value(0.5)
    panel.findChild(ctkSliderWidget, "heatmapThresholdSlider").set_value(0.2)
    panel.findChild(QLabel, "heatmapLegendLabel").setPixmap(legend())
    for name in ("correctButton", "exportButton"):
        panel.findChild(QWidget, name).setEnabled(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer_module_panel.png")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    panel = load_panel()
    fill_example(panel)
    panel.resize(420, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    panel.resize(420, panel.sizeHint().height())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(args.out)):
        raise SystemExit(f"Could not write {args.out}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
