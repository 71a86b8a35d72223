"""All SQL of templates, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import Template


class TemplateRepository(WorkspaceRepository[Template]):
    model = Template
    noun = "template"
    searched = (Template.name, Template.subject)
