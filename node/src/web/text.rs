//! The console's words, in Spanish and English. Each text is one line with
//! both languages, so a missing translation does not compile.

use ecointegra_proto::v1::FilingStatus;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Es,
    En,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim() {
            "es" => Some(Lang::Es),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Es => "es",
            Lang::En => "en",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Es => &ES,
            Lang::En => &EN,
        }
    }

    /// A filing status for people.
    pub fn status(self, status: FilingStatus) -> &'static str {
        use FilingStatus::*;
        let (es, en) = match status {
            Registered => ("Registrado", "Registered"),
            Sent => ("Enviado", "Sent"),
            Delivered => ("Entregado", "Delivered"),
            Received => ("Recibido", "Received"),
            Observed => ("Observado", "Observed"),
            Rejected => ("Rechazado", "Rejected"),
            Forwarded => ("Derivado", "Forwarded"),
            Answered => ("Atendido", "Answered"),
            Archived => ("Archivado", "Archived"),
            Unspecified => ("Desconocido", "Unknown"),
        };
        match self {
            Lang::Es => es,
            Lang::En => en,
        }
    }
}

macro_rules! texts {
    ($($field:ident: $es:literal, $en:literal;)*) => {
        pub struct Texts {
            $(pub $field: &'static str,)*
        }
        pub const ES: Texts = Texts { $($field: $es,)* };
        pub const EN: Texts = Texts { $($field: $en,)* };
    };
}

texts! {
    language_name: "Español", "English";
    site_name: "ecointegra", "ecointegra";
    skip_to_content: "Saltar al contenido", "Skip to content";
    nav_label: "Navegación principal", "Main navigation";
    nav_tracking: "Seguimiento", "Tracking";
    nav_inbox: "Bandeja", "Inbox";
    nav_new: "Nuevo trámite", "New filing";
    nav_operations: "Operación", "Operations";
    footer: "Sector Ambiental del Perú · Interoperabilidad de trámites entre entidades", "Environment sector of Peru · Filings moved between institutions";
    sign_in: "Ingresar", "Sign in";
    sign_out: "Salir", "Sign out";
    sign_in_title: "Ingreso del personal", "Staff sign-in";
    sign_in_intro: "Para mesa de partes y operación. Los ciudadanos no necesitan ingresar para hacer seguimiento.", "For intake clerks and operators. Citizens need no sign-in to track a filing.";
    token_label: "Clave de acceso", "Access token";
    token_help: "La clave que le asignó el administrador de su entidad.", "The token your institution's administrator gave you.";
    sign_in_failed: "La clave no es válida para la mesa de partes ni para operación.", "That token is not valid for the desk or for operations.";
    too_many_attempts: "Demasiados intentos fallidos. Espere un minuto e inténtelo de nuevo.", "Too many failed attempts. Wait a minute and try again.";
    too_many_title: "Demasiados intentos", "Too many attempts";
    forbidden_title: "Acceso no permitido", "Not allowed";
    forbidden_body: "Su rol no permite ver esta página.", "Your role may not see this page.";
    csrf_title: "Formulario vencido", "Form expired";
    csrf_body: "El formulario no corresponde a su sesión. Vuelva a la página e inténtelo otra vez.", "The form does not belong to your session. Go back to the page and try again.";
    not_found_title: "No encontrado", "Not found";
    not_found_body: "No encontramos lo que busca.", "We could not find what you are looking for.";
    not_possible_title: "No es posible", "Not possible";
    invalid_title: "Datos no válidos", "Invalid input";
    unavailable_title: "Servicio no disponible", "Service unavailable";
    unavailable_body: "El servicio no está disponible en este momento. Inténtelo más tarde.", "The service is not available right now. Try again later.";
    internal_body: "Ocurrió un error interno. El equipo de operación puede verlo en el registro del nodo.", "An internal error occurred. Operators can see it in the node's log.";
    required: "Es obligatorio.", "Is required.";
    fix_errors: "Corrija lo siguiente:", "Please fix the following:";
    choose: "— Elija —", "— Choose —";
    any: "Todos", "All";
    track_title: "Seguimiento de trámites", "Track a filing";
    track_intro: "Ingrese el código de seguimiento y la clave de verificación que figuran en su cargo. Puede consultar desde el portal de cualquier entidad del sector.", "Enter the tracking code and the verification code printed on your receipt. Any institution of the sector can answer.";
    tracking_code: "Código de seguimiento", "Tracking code";
    tracking_code_help: "Por ejemplo: SENAMHI-2026-7K3M9Q2P", "For example: SENAMHI-2026-7K3M9Q2P";
    verification_code: "Clave de verificación", "Verification code";
    verification_code_help: "16 letras y números en grupos de cuatro (p. ej. K7Q2-9XWD-M4TA-PR3E), en su cargo; los cargos anteriores tienen 8.", "16 letters and digits in groups of four (e.g. K7Q2-9XWD-M4TA-PR3E), on your receipt; older receipts have 8.";
    track_button: "Consultar", "Track";
    track_not_found: "No encontramos un trámite con ese código y esa clave de verificación. Revise ambos datos.", "We found no filing with that tracking code and verification code. Check both.";
    track_result_title: "Estado del trámite", "Filing status";
    status: "Estado", "Status";
    current_holder: "Lo tiene", "Held by";
    due_date: "Fecha límite de atención", "Due date";
    timeline: "Recorrido", "Timeline";
    towards: "→", "→";
    coming_from: "desde", "from";
    correction: "subsanación", "correction";
    answer_documents: "Documentos de respuesta", "Answer documents";
    see_cargo: "Ver cargo de recepción", "See the delivery receipt";
    cargo_title: "Cargo de recepción", "Delivery receipt (cargo)";
    cargo_intro: "Cada entidad que recibió el trámite firmó digitalmente su recepción. Cada cargo nombra la huella (SHA-256) del anterior y la de cada documento.", "Each institution that received the filing signed its receipt. Each receipt names the SHA-256 of the one before and of every document.";
    cargo_elsewhere: "Este portal aún no tiene el cargo firmado. Lo tienen las entidades que intervinieron:", "This portal does not hold the signed receipt yet. The institutions involved do:";
    chain_invalid: "La cadena de cargos no se pudo verificar", "The chain of receipts does not verify";
    receipt: "Cargo", "Receipt";
    sent_by: "Enviado por", "Sent by";
    received_at: "Recibido el", "Received at";
    registry_number: "N.° de registro", "Registry number";
    signature: "Firma", "Signature";
    signature_valid: "Firma digital válida según el directorio del sector", "Valid digital signature per the sector directory";
    signature_invalid: "Firma no verificada", "Signature not verified";
    receipt_digest: "Huella del cargo (SHA-256)", "Receipt digest (SHA-256)";
    documents: "Documentos", "Documents";
    name: "Nombre", "Name";
    size: "Tamaño", "Size";
    verify_at: "Verifique este cargo en:", "Verify this receipt at:";
    print: "Imprimir", "Print";
    verify_title: "Verificación de cargo", "Receipt verification";
    verify_ok: "Cargo auténtico: la entidad lo firmó y la cadena de firmas es válida.", "Authentic receipt: the institution signed it and the chain of signatures is valid.";
    verify_unknown: "Este portal no tiene un cargo con ese código y esa huella.", "This portal holds no receipt with that code and digest.";
    inbox_title: "Bandeja de entrada", "Inbox";
    inbox_caption: "Trámites recibidos", "Filings received";
    inbox_empty: "No hay trámites con esos filtros.", "No filings match those filters.";
    from_institution: "Remitido por", "From";
    due_soon: "Por vencer o vencidos", "Due soon or overdue";
    filter: "Filtrar", "Filter";
    arrived: "Llegó", "Arrived";
    overdue: "vencido", "overdue";
    days_left: "días hábiles", "business days";
    new_filing_title: "Nuevo trámite", "New filing";
    sender: "Remitente", "Sender";
    id_type: "Tipo de documento", "Identity document";
    foreign_id: "Carné de extranjería", "Foreign resident card (CE)";
    id_number: "Número de documento", "Document number";
    id_number_help: "DNI: 8 dígitos · RUC: 11 dígitos · CE: 9 a 12 caracteres", "DNI: 8 digits · RUC: 11 digits · CE: 9 to 12 characters";
    sender_name: "Nombre o razón social", "Name or company name";
    email_optional: "Correo electrónico (opcional)", "Email (optional)";
    filing: "Trámite", "Filing";
    destination: "Entidad de destino", "Destination institution";
    subject: "Asunto", "Subject";
    folios: "Folios", "Pages (folios)";
    filing_type: "Tipo de trámite", "Filing type";
    general: "General", "General";
    corrects: "Subsana el trámite (opcional)", "Corrects filing (optional)";
    corrects_help: "Código de un trámite observado de esta entidad; la subsanación conserva ese código.", "Tracking code of an observed filing of this institution; the correction keeps it.";
    pdf_files: "Archivos PDF", "PDF files";
    pdf_files_help: "Puede adjuntar varios archivos.", "You may attach several files.";
    upload_progress: "Progreso de la carga", "Upload progress";
    submit_filing: "Registrar y enviar", "Register and send";
    desk_cargo: "Cargo de presentación", "Filing receipt";
    sgd_document: "Documento del SGD", "Document (SGD)";
    download_pdf: "Descargar PDF", "Download PDF";
    notifications: "Notificaciones", "Notifications";
    channel: "Canal", "Channel";
    sent: "Enviadas", "Sent";
    pending: "Pendientes", "Pending";
    failing: "Con fallos", "Failing";
    last_error: "Último error", "Last error";
    unsubscribed_title: "Correos del trámite", "Mail about the filing";
    unsubscribed_body: "Ya no recibirá correos sobre este trámite. Puede seguirlo en el portal con sus códigos.", "You will receive no more mail about this filing. You can follow it at the portal with your codes.";
    download_evidence: "Descargar evidencia (ZIP, verificable sin conexión con ecointegra evidence verify)", "Download evidence (ZIP, verifiable offline with ecointegra evidence verify)";
    copy: "Copia", "Copy";
    copy_held: "recibida de", "received from";
    copy_sent: "registro del envío a", "record of the transfer to";
    copy_hop: "tramo", "hop";
    other_copies: "Otras copias en esta entidad", "Other copies at this institution";
    back_to_filing: "Volver al trámite", "Back to the filing";
    filed_at: "Presentado en", "Filed at";
    follow_at: "Siga su trámite en:", "Track it at:";
    keep_codes: "Conserve este cargo: el código y la clave le permiten consultar su trámite en el portal de cualquier entidad del sector.", "Keep this receipt: the two codes let you track your filing at any institution of the sector.";
    route: "Ruta", "Route";
    registered: "Registrado", "Registered";
    delivered: "Entregado", "Delivered";
    note: "Nota", "Note";
    open: "Abrir", "Open";
    view: "Ver", "View";
    download: "Descargar", "Download";
    actions: "Acciones", "Actions";
    action_done: "Acción registrada", "Action recorded";
    no_actions: "En este estado no hay acciones disponibles.", "No action is available in this state.";
    act_receive: "Recibir", "Receive";
    act_observe: "Observar", "Observe";
    act_reject: "Rechazar", "Reject";
    act_forward: "Derivar", "Forward";
    act_answer: "Atender", "Answer";
    act_archive: "Archivar", "Archive";
    internal_registry: "N.° de registro interno", "Internal registry number";
    office: "Oficina o unidad", "Office";
    reason: "Motivo", "Reason";
    answer_files: "Documentos de respuesta", "Answer documents";
    operations_title: "Operación", "Operations";
    queues: "Colas", "Queues";
    reachable: "disponible", "reachable";
    unreachable: "NO disponible", "NOT reachable";
    updated: "Actualizado", "Updated";
    institution: "Entidad", "Institution";
    inbox_lag: "Pendientes en bandeja", "Inbox lag";
    outbox_backlog: "Por publicar", "Outbox backlog";
    pending_receipts: "Esperando cargo", "Awaiting receipt";
    dlq_open_count: "Mensajes fallidos", "Dead letters";
    last_delivery: "Última entrega", "Last delivery";
    deliveries_per_minute: "Entregas por minuto", "Deliveries per minute";
    troubled: "Trámites detenidos", "Stuck filings";
    last_hour: "Última hora", "Last hour";
    sent_receipted: "enviados con cargo", "sent and receipted";
    received: "recibidos", "received";
    latency: "Tiempo de registro a cargo", "Submit-to-receipt time";
    chart_data: "Ver los datos", "See the data";
    minute: "Minuto", "Minute";
    dead_letters: "Mensajes fallidos (DLQ)", "Dead letters (DLQ)";
    dead_letter: "Mensaje fallido", "Dead letter";
    dlq_empty: "No hay mensajes fallidos.", "There are no dead letters.";
    dlq_open: "Abierto", "Open";
    dlq_replayed: "Reenviado", "Replayed";
    dlq_discarded: "Descartado", "Discarded";
    when: "Cuándo", "When";
    state: "Estado", "State";
    claimed_sender: "Remitente declarado", "Claimed sender";
    source: "Origen", "Source";
    message_id: "Id. del mensaje", "Message id";
    record_key: "Clave del registro", "Record key";
    envelope: "Sobre", "Envelope";
    original_bytes: "Bytes originales", "Original bytes";
    replay: "Reenviar", "Replay";
    replay_help: "Vuelve a publicar el mensaje original en su tema; hágalo cuando la causa esté corregida.", "Publishes the original record to its topic again; do it once the cause is fixed.";
    discard: "Descartar", "Discard";
    discard_reason: "Motivo del descarte", "Why it is discarded";
    back_to_operations: "Volver a operación", "Back to operations";
}

/// The node's rule messages (English, shared with gRPC) in the reader's
/// language. A message it does not know stays as it is.
pub fn localize(lang: Lang, message: &str) -> String {
    if lang == Lang::En {
        let mut chars = message.chars();
        return match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
    }
    const FIXED: &[(&str, &str)] = &[
        ("is required", "Es obligatorio."),
        ("must not be empty", "No puede estar vacío."),
        ("must be at least 1", "Debe ser al menos 1."),
        ("must be a whole number", "Debe ser un número entero."),
        (
            "a DNI is exactly 8 digits",
            "Un DNI tiene exactamente 8 dígitos.",
        ),
        (
            "a RUC is exactly 11 digits",
            "Un RUC tiene exactamente 11 dígitos.",
        ),
        (
            "a RUC starts with 10, 15, 16, 17 or 20",
            "Un RUC empieza con 10, 15, 16, 17 o 20.",
        ),
        (
            "the RUC's check digit does not match",
            "El dígito verificador del RUC no coincide.",
        ),
        (
            "a CE is 9 to 12 letters or digits",
            "Un carné de extranjería tiene de 9 a 12 letras o dígitos.",
        ),
        (
            "must be DNI, RUC or CE",
            "Elija DNI, RUC o carné de extranjería.",
        ),
        (
            "is not an email address",
            "No es un correo electrónico válido.",
        ),
        (
            "at least one document is required",
            "Adjunte al menos un documento.",
        ),
        (
            "an answer carries at least one document",
            "La respuesta debe llevar al menos un documento.",
        ),
        ("is this institution", "Es esta misma institución."),
        ("is too long", "Es demasiado largo."),
        ("has too many fields", "Tiene demasiados campos."),
        (
            "is required, at most 128 characters",
            "Es obligatorio, de hasta 128 caracteres.",
        ),
        (
            "must be a plain file name, without path separators or control characters",
            "Debe ser un nombre de archivo simple, sin separadores de ruta ni caracteres de control.",
        ),
        (
            "must be at most 200 characters, without control characters",
            "Debe tener como máximo 200 caracteres, sin caracteres de control.",
        ),
        (
            "form fields must come before the documents",
            "Los campos del formulario deben ir antes de los documentos.",
        ),
        (
            "is required: say why it is discarded",
            "Es obligatorio: indique por qué se descarta.",
        ),
    ];
    if let Some((_, es)) = FIXED.iter().find(|(en, _)| *en == message) {
        return (*es).to_owned();
    }
    if let Some(n) = message
        .strip_prefix("must be at most ")
        .and_then(|r| r.strip_suffix(" characters"))
    {
        return format!("Debe tener como máximo {n} caracteres.");
    }
    if let Some(n) = message
        .strip_prefix("is over the maximum document size of ")
        .and_then(|r| r.strip_suffix(" bytes"))
    {
        let mb = n
            .parse::<f64>()
            .map_or(n.to_owned(), |b| format!("{:.0} MB", b / 1048576.0));
        return format!("Supera el tamaño máximo de documento ({mb}).");
    }
    if message.ends_with("is not an institution of the sector directory") {
        return "No es una institución del directorio del sector.".into();
    }
    if message.ends_with("is this institution; a filing travels to another one") {
        return "Es esta misma institución; el trámite debe ir a otra entidad.".into();
    }
    if message.ends_with("is suspended in the sector directory") {
        return "La entidad está suspendida en el directorio del sector.".into();
    }
    if let Some(code) = message.strip_prefix("no filing of this institution has tracking code ") {
        return format!("Ningún trámite de esta entidad tiene el código {code}.");
    }
    if message.ends_with("only an OBSERVED filing can be corrected") {
        return "Solo se puede subsanar un trámite observado.".into();
    }
    // "filing X is DELIVERED; forward needs it to be RECEIVED"
    if let Some(rest) = message.strip_prefix("filing ")
        && let Some((code_state, need)) = rest.split_once("; ")
        && let Some((code, state)) = code_state.split_once(" is ")
        && let Some((_, wanted)) = need.split_once(" needs it to be ")
    {
        let word = |name: &str| {
            FilingStatus::from_short_name(name)
                .map_or(name.to_lowercase(), |s| Lang::Es.status(s).to_lowercase())
        };
        let wanted: Vec<String> = wanted.split(" or ").map(word).collect();
        return format!(
            "El trámite {code} está {}; esta acción requiere que esté {}.",
            word(state),
            wanted.join(" o ")
        );
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_messages_in_spanish() {
        assert_eq!(localize(Lang::Es, "is required"), "Es obligatorio.");
        assert_eq!(
            localize(Lang::Es, "must be at most 500 characters"),
            "Debe tener como máximo 500 caracteres."
        );
        assert_eq!(
            localize(
                Lang::Es,
                "filing OEFA-2026-AB is DELIVERED; forward needs it to be RECEIVED"
            ),
            "El trámite OEFA-2026-AB está entregado; esta acción requiere que esté recibido."
        );
        assert_eq!(localize(Lang::En, "is required"), "Is required");
        assert_eq!(localize(Lang::Es, "something new"), "something new");
    }
}
