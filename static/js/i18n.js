// Strings in French (default) and Arabic (right to left). The language lives in
// localStorage so each device keeps its choice; switching re-renders, nothing reloads.

const FR = {
  'app.name': 'BTP Projets',
  'app.tagline': 'Vos chantiers, synchronisés sur tous vos appareils.',
  'lang.switch': 'العربية',
  'lang.switchLabel': 'Passer en arabe',
  'auth.login': 'Connexion',
  'auth.register': 'Créer un compte',
  'auth.email': 'Adresse e-mail',
  'auth.password': 'Mot de passe',
  'auth.name': 'Nom complet',
  'auth.submitLogin': 'Se connecter',
  'auth.submitRegister': 'Créer mon compte',
  'auth.passwordHint': 'Au moins 8 caractères.',
  'auth.busy': 'Patientez…',
  'auth.failed': 'Connexion impossible. Vérifiez vos identifiants.',
  'auth.logout': 'Se déconnecter',
  'auth.logoutPending': 'Des modifications ne sont pas encore synchronisées. Se déconnecter quand même ? Elles seront perdues.',
  'conn.websocket': 'Temps réel · WebSocket',
  'conn.polling': 'Synchro HTTP périodique',
  'conn.offline': 'Hors ligne',
  'conn.connecting': 'Connexion…',
  'conn.titleWebsocket': 'Connecté en WebSocket : les changements arrivent instantanément.',
  'conn.titlePolling': 'WebSocket indisponible : synchronisation HTTP toutes les quelques secondes.',
  'conn.titleOffline': 'Serveur injoignable : vos modifications sont gardées sur cet appareil.',
  'sync.never': 'Jamais synchronisé',
  'sync.at': 'Synchro {time}',
  'sync.pending': '{n} en attente',
  'sync.pendingTitle': 'Modifications enregistrées sur cet appareil, envoyées dès le retour du réseau.',
  'totals.all': 'Total',
  'totals.budget': 'Budget total',
  'totals.share': '{pct} % des projets',
  'status.planned': 'Planifié',
  'status.active': 'En cours',
  'status.on_hold': 'En pause',
  'status.done': 'Terminé',
  'filter.all': 'Tous les statuts',
  'search.placeholder': 'Rechercher un projet, un client, une ville…',
  'search.label': 'Rechercher',
  'filter.label': 'Filtrer par statut',
  'csv.name': 'Nom',
  'csv.client': 'Client',
  'csv.city': 'Ville',
  'csv.status': 'Statut',
  'csv.budget_mad': 'Budget (MAD)',
  'csv.progress': 'Avancement (%)',
  'csv.start_date': 'Début',
  'csv.end_date': 'Fin',
  'csv.notes': 'Notes',
  'export.csv': 'Exporter (CSV)',
  'export.title': 'Télécharger la liste affichée pour Excel ou LibreOffice',
  'sort.label': 'Trier',
  'sort.newest': 'Plus récents',
  'sort.name': 'Nom (A → Z)',
  'sort.end_date': 'Date de fin (la plus proche)',
  'sort.budget': 'Budget (le plus élevé)',
  'sort.progress': 'Avancement (le moins avancé)',
  'overdue.badge': 'En retard',
  'overdue.title': 'La date de fin est passée et le projet n’est pas terminé.',
  'projects.title': 'Projets',
  'projects.new': 'Nouveau projet',
  'projects.loading': 'Chargement des projets…',
  'projects.emptyTitle': 'Aucun projet pour l’instant',
  'projects.emptyText': 'Créez votre premier chantier : il apparaîtra aussitôt sur vos autres appareils.',
  'projects.noMatchTitle': 'Aucun résultat',
  'projects.noMatchText': 'Aucun projet ne correspond à la recherche ou au filtre.',
  'projects.clearFilters': 'Effacer les filtres',
  'projects.count': '{n} projet(s) affiché(s)',
  'field.name': 'Nom du projet',
  'field.client': 'Client',
  'field.city': 'Ville',
  'field.budget': 'Budget (MAD)',
  'field.status': 'Statut',
  'field.start_date': 'Date de début',
  'field.end_date': 'Date de fin',
  'field.progress': 'Avancement (%)',
  'field.notes': 'Notes',
  'field.created_at': 'Créé le',
  'field.updated_at': 'Modifié le',
  'form.createTitle': 'Nouveau projet',
  'form.editTitle': 'Modifier le projet',
  'form.save': 'Enregistrer',
  'form.cancel': 'Annuler',
  'form.saving': 'Enregistrement…',
  'form.savedOffline': 'Enregistré sur cet appareil — envoi dès le retour du réseau.',
  'form.fixErrors': 'Corrigez les champs signalés.',
  'form.unchanged': 'Aucune modification.',
  'valid.nameRequired': 'Le nom est obligatoire.',
  'valid.nameTooLong': 'Le nom ne doit pas dépasser 200 caractères.',
  'valid.budget': 'Montant invalide (nombre positif, en dirhams).',
  'valid.progress': 'L’avancement doit être entre 0 et 100.',
  'valid.date': 'Date invalide.',
  'valid.endBeforeStart': 'La date de fin doit être postérieure ou égale à la date de début.',
  'valid.status': 'Statut invalide.',
  'valid.email': 'Adresse e-mail invalide.',
  'valid.password': 'Le mot de passe doit contenir au moins 8 caractères.',
  'valid.required': 'Champ obligatoire.',
  'valid.accountName': 'Le nom doit compter de 1 à 100 caractères.',
  'valid.text': 'Texte trop long ou invalide.',
  'valid.invalid': 'Valeur invalide.',
  'apiError.emailTaken': 'Un compte existe déjà avec cette adresse e-mail.',
  'apiError.invalid_credentials': 'Connexion impossible. Vérifiez vos identifiants.',
  'apiError.unauthorized': 'Session expirée, reconnectez-vous.',
  'apiError.rate_limited': 'Trop de tentatives. Réessayez dans quelques minutes.',
  'apiError.validation_failed': 'Certaines valeurs sont invalides.',
  'apiError.not_found': 'Ce projet n’existe pas ou a été supprimé.',
  'apiError.conflict': 'Ce projet a été supprimé sur un autre appareil.',
  'apiError.deleted': 'Ce projet a été supprimé sur un autre appareil.',
  'apiError.payload_too_large': 'Envoi trop volumineux.',
  'apiError.batch_too_large': 'Trop de modifications en une fois.',
  'apiError.upstream_unavailable': 'Le serveur est momentanément indisponible. Réessayez.',
  'apiError.upstream_timeout': 'Le serveur a mis trop de temps à répondre. Réessayez.',
  'apiError.request_timeout': 'La requête a pris trop de temps. Réessayez.',
  'apiError.internal': 'Erreur du serveur. Réessayez plus tard.',
  'apiError.invalid': 'Modification refusée : données invalides.',
  'apiError.unknown': 'Le serveur a refusé la demande.',
  'detail.back': 'Retour aux projets',
  'detail.edit': 'Modifier',
  'detail.delete': 'Supprimer',
  'detail.notFoundTitle': 'Projet introuvable',
  'detail.notFoundText': 'Ce projet a été supprimé ou n’existe pas.',
  'detail.noNotes': 'Aucune note.',
  'detail.pending': 'Non synchronisé',
  'history.title': 'Historique',
  'history.empty': 'Aucune modification enregistrée.',
  'history.unavailable': 'Historique indisponible hors connexion.',
  'history.kind.create': 'Création',
  'history.kind.update': 'Modification',
  'history.kind.delete': 'Suppression',
  'delete.title': 'Supprimer ce projet ?',
  'delete.text': '« {name} » sera supprimé sur tous vos appareils. Cette action est définitive.',
  'delete.confirm': 'Supprimer',
  'delete.cancel': 'Annuler',
  'toast.deleted': 'Projet supprimé.',
  'toast.created': 'Projet créé.',
  'toast.updated': 'Projet mis à jour.',
  'toast.rejected': 'Le serveur a refusé une modification : {reason}',
  'toast.conflict': 'Ce projet a été supprimé sur un autre appareil.',
  'conflict.title': 'Modifié sur un autre appareil',
  'conflict.text': 'Pendant votre modification de « {name} », un autre appareil a changé les mêmes champs. Choisissez les valeurs à garder.',
  'conflict.yours': 'Votre valeur',
  'conflict.current': 'Valeur actuelle',
  'conflict.keepMine': 'Garder mes valeurs',
  'conflict.keepCurrent': 'Garder les valeurs actuelles',
  'conflict.deleteTitle': 'Projet modifié depuis votre suppression',
  'conflict.deleteText': '« {name} » a été modifié sur un autre appareil après que vous l’avez supprimé. Le supprimer quand même ?',
  'conflict.deleteAnyway': 'Supprimer quand même',
  'conflict.whenDeleted': 'À votre suppression',
  'conflict.keepProject': 'Garder le projet',
  'conflict.sentMine': 'Vos valeurs ont été renvoyées.',
  'conflict.keptCurrent': 'Les valeurs actuelles sont conservées.',
  'conflict.gone': 'Un projet en conflit a été supprimé sur un autre appareil.',
  'toast.sessionExpired': 'Session expirée, reconnectez-vous.',
  'toast.signedOutElsewhere': 'Vous avez été déconnecté dans un autre onglet.',
  'error.title': 'Serveur injoignable',
  'error.config': 'Impossible de lire la configuration de l’application.',
  'error.server': 'Le serveur ne répond pas.',
  'error.tried': 'Adresse essayée :',
  'error.retry': 'Réessayer',
  'error.offlineContinue': 'Continuer hors ligne',
  'error.noApiUrl': 'Aucune adresse de serveur fournie par l’application de bureau (window.electron.apiUrl).',
  'empty.dash': '—',
};

const AR = {
  'app.name': 'مشاريع البناء',
  'app.tagline': 'أوراشك متزامنة على جميع أجهزتك.',
  'lang.switch': 'Français',
  'lang.switchLabel': 'التبديل إلى الفرنسية',
  'auth.login': 'تسجيل الدخول',
  'auth.register': 'إنشاء حساب',
  'auth.email': 'البريد الإلكتروني',
  'auth.password': 'كلمة المرور',
  'auth.name': 'الاسم الكامل',
  'auth.submitLogin': 'دخول',
  'auth.submitRegister': 'إنشاء حسابي',
  'auth.passwordHint': '8 أحرف على الأقل.',
  'auth.busy': 'يرجى الانتظار…',
  'auth.failed': 'تعذر تسجيل الدخول. تحقق من بياناتك.',
  'auth.logout': 'تسجيل الخروج',
  'auth.logoutPending': 'بعض التعديلات لم تتم مزامنتها بعد. هل تريد الخروج رغم ذلك؟ ستفقد هذه التعديلات.',
  'conn.websocket': 'مباشر · WebSocket',
  'conn.polling': 'مزامنة HTTP دورية',
  'conn.offline': 'غير متصل',
  'conn.connecting': 'جارٍ الاتصال…',
  'conn.titleWebsocket': 'متصل عبر WebSocket: تصل التغييرات فوراً.',
  'conn.titlePolling': 'WebSocket غير متاح: مزامنة عبر HTTP كل بضع ثوانٍ.',
  'conn.titleOffline': 'الخادم غير متاح: تعديلاتك محفوظة على هذا الجهاز.',
  'sync.never': 'لم تتم المزامنة بعد',
  'sync.at': 'آخر مزامنة {time}',
  'sync.pending': '{n} في الانتظار',
  'sync.pendingTitle': 'تعديلات محفوظة على هذا الجهاز، تُرسل عند عودة الشبكة.',
  'totals.all': 'المجموع',
  'totals.budget': 'الميزانية الإجمالية',
  'totals.share': '{pct}٪ من المشاريع',
  'status.planned': 'مخطط',
  'status.active': 'قيد الإنجاز',
  'status.on_hold': 'متوقف مؤقتاً',
  'status.done': 'منتهٍ',
  'filter.all': 'كل الحالات',
  'search.placeholder': 'ابحث عن مشروع أو زبون أو مدينة…',
  'search.label': 'بحث',
  'filter.label': 'تصفية حسب الحالة',
  'csv.name': 'الاسم',
  'csv.client': 'الزبون',
  'csv.city': 'المدينة',
  'csv.status': 'الحالة',
  'csv.budget_mad': 'الميزانية (درهم)',
  'csv.progress': 'نسبة الإنجاز (%)',
  'csv.start_date': 'البداية',
  'csv.end_date': 'النهاية',
  'csv.notes': 'ملاحظات',
  'export.csv': 'تصدير (CSV)',
  'export.title': 'تنزيل القائمة المعروضة لبرنامج Excel أو LibreOffice',
  'sort.label': 'ترتيب',
  'sort.newest': 'الأحدث',
  'sort.name': 'الاسم (أ ← ي)',
  'sort.end_date': 'تاريخ الانتهاء (الأقرب)',
  'sort.budget': 'الميزانية (الأعلى)',
  'sort.progress': 'نسبة الإنجاز (الأقل)',
  'overdue.badge': 'متأخر',
  'overdue.title': 'تجاوز تاريخ الانتهاء والمشروع غير منته.',
  'projects.title': 'المشاريع',
  'projects.new': 'مشروع جديد',
  'projects.loading': 'جارٍ تحميل المشاريع…',
  'projects.emptyTitle': 'لا توجد مشاريع بعد',
  'projects.emptyText': 'أنشئ أول ورش لك: سيظهر فوراً على أجهزتك الأخرى.',
  'projects.noMatchTitle': 'لا توجد نتائج',
  'projects.noMatchText': 'لا يوجد مشروع يطابق البحث أو التصفية.',
  'projects.clearFilters': 'مسح التصفية',
  'projects.count': '{n} مشروع معروض',
  'field.name': 'اسم المشروع',
  'field.client': 'الزبون',
  'field.city': 'المدينة',
  'field.budget': 'الميزانية (درهم)',
  'field.status': 'الحالة',
  'field.start_date': 'تاريخ البدء',
  'field.end_date': 'تاريخ الانتهاء',
  'field.progress': 'نسبة الإنجاز (%)',
  'field.notes': 'ملاحظات',
  'field.created_at': 'أُنشئ في',
  'field.updated_at': 'عُدّل في',
  'form.createTitle': 'مشروع جديد',
  'form.editTitle': 'تعديل المشروع',
  'form.save': 'حفظ',
  'form.cancel': 'إلغاء',
  'form.saving': 'جارٍ الحفظ…',
  'form.savedOffline': 'حُفظ على هذا الجهاز — سيُرسل عند عودة الشبكة.',
  'form.fixErrors': 'يرجى تصحيح الحقول المشار إليها.',
  'form.unchanged': 'لا توجد تعديلات.',
  'valid.nameRequired': 'الاسم إلزامي.',
  'valid.nameTooLong': 'يجب ألا يتجاوز الاسم 200 حرف.',
  'valid.budget': 'مبلغ غير صالح (رقم موجب بالدرهم).',
  'valid.progress': 'يجب أن تكون نسبة الإنجاز بين 0 و100.',
  'valid.date': 'تاريخ غير صالح.',
  'valid.endBeforeStart': 'يجب أن يكون تاريخ الانتهاء بعد تاريخ البدء أو مساوياً له.',
  'valid.status': 'حالة غير صالحة.',
  'valid.email': 'بريد إلكتروني غير صالح.',
  'valid.password': 'يجب أن تحتوي كلمة المرور على 8 أحرف على الأقل.',
  'valid.required': 'حقل إلزامي.',
  'valid.accountName': 'يجب أن يتكون الاسم من 1 إلى 100 حرف.',
  'valid.text': 'نص طويل جدًا أو غير صالح.',
  'valid.invalid': 'قيمة غير صالحة.',
  'apiError.emailTaken': 'يوجد حساب بهذا البريد الإلكتروني بالفعل.',
  'apiError.invalid_credentials': 'تعذر تسجيل الدخول. تحقق من بياناتك.',
  'apiError.unauthorized': 'انتهت الجلسة، يرجى تسجيل الدخول من جديد.',
  'apiError.rate_limited': 'محاولات كثيرة جدًا. أعد المحاولة بعد بضع دقائق.',
  'apiError.validation_failed': 'بعض القيم غير صالحة.',
  'apiError.not_found': 'هذا المشروع غير موجود أو تم حذفه.',
  'apiError.conflict': 'تم حذف هذا المشروع على جهاز آخر.',
  'apiError.deleted': 'تم حذف هذا المشروع على جهاز آخر.',
  'apiError.payload_too_large': 'حجم الإرسال كبير جدًا.',
  'apiError.batch_too_large': 'تعديلات كثيرة جدًا دفعة واحدة.',
  'apiError.upstream_unavailable': 'الخادم غير متاح مؤقتًا. أعد المحاولة.',
  'apiError.upstream_timeout': 'تأخر الخادم في الرد. أعد المحاولة.',
  'apiError.request_timeout': 'استغرق الطلب وقتًا طويلًا. أعد المحاولة.',
  'apiError.internal': 'خطأ في الخادم. أعد المحاولة لاحقًا.',
  'apiError.invalid': 'رُفض التعديل: بيانات غير صالحة.',
  'apiError.unknown': 'رفض الخادم الطلب.',
  'detail.back': 'العودة إلى المشاريع',
  'detail.edit': 'تعديل',
  'detail.delete': 'حذف',
  'detail.notFoundTitle': 'المشروع غير موجود',
  'detail.notFoundText': 'تم حذف هذا المشروع أو أنه غير موجود.',
  'detail.noNotes': 'لا توجد ملاحظات.',
  'detail.pending': 'غير متزامن',
  'history.title': 'السجل',
  'history.empty': 'لا توجد تعديلات مسجلة.',
  'history.unavailable': 'السجل غير متاح دون اتصال.',
  'history.kind.create': 'إنشاء',
  'history.kind.update': 'تعديل',
  'history.kind.delete': 'حذف',
  'delete.title': 'حذف هذا المشروع؟',
  'delete.text': 'سيُحذف «{name}» من جميع أجهزتك. هذا الإجراء نهائي.',
  'delete.confirm': 'حذف',
  'delete.cancel': 'إلغاء',
  'toast.deleted': 'تم حذف المشروع.',
  'toast.created': 'تم إنشاء المشروع.',
  'toast.updated': 'تم تحديث المشروع.',
  'toast.rejected': 'رفض الخادم تعديلاً: {reason}',
  'toast.conflict': 'تم حذف هذا المشروع على جهاز آخر.',
  'conflict.title': 'عُدّل على جهاز آخر',
  'conflict.text': 'أثناء تعديلك لـ«{name}»، غيّر جهاز آخر الحقول نفسها. اختر القيم التي تريد الاحتفاظ بها.',
  'conflict.yours': 'قيمتك',
  'conflict.current': 'القيمة الحالية',
  'conflict.keepMine': 'الاحتفاظ بقيمي',
  'conflict.keepCurrent': 'الاحتفاظ بالقيم الحالية',
  'conflict.deleteTitle': 'عُدّل المشروع بعد حذفك له',
  'conflict.deleteText': 'عُدّل «{name}» على جهاز آخر بعد أن حذفته. هل تريد حذفه رغم ذلك؟',
  'conflict.deleteAnyway': 'الحذف رغم ذلك',
  'conflict.whenDeleted': 'عند حذفك له',
  'conflict.keepProject': 'الاحتفاظ بالمشروع',
  'conflict.sentMine': 'أُعيد إرسال قيمك.',
  'conflict.keptCurrent': 'تم الاحتفاظ بالقيم الحالية.',
  'conflict.gone': 'حُذف مشروع متعارض على جهاز آخر.',
  'toast.sessionExpired': 'انتهت الجلسة، يرجى تسجيل الدخول من جديد.',
  'toast.signedOutElsewhere': 'تم تسجيل خروجك من علامة تبويب أخرى.',
  'error.title': 'الخادم غير متاح',
  'error.config': 'تعذرت قراءة إعدادات التطبيق.',
  'error.server': 'الخادم لا يستجيب.',
  'error.tried': 'العنوان الذي تمت تجربته:',
  'error.retry': 'إعادة المحاولة',
  'error.offlineContinue': 'المتابعة دون اتصال',
  'error.noApiUrl': 'لم يوفر تطبيق سطح المكتب عنوان الخادم (window.electron.apiUrl).',
  'empty.dash': '—',
};

const DICTS = { fr: FR, ar: AR };
/** Every message, per language (tests check that both say everything). */
export const dictionaries = DICTS;
const LOCALES = { fr: 'fr-MA', ar: 'ar-MA' };
const KEY = 'btp.lang';

let lang = readLang();

/**
 * The language of a browser's preference list (`navigator.languages`): the first of
 * French or Arabic it names, French when it names neither.
 */
export function preferredLang(languages) {
  for (const tag of languages || []) {
    const primary = String(tag).toLowerCase().split('-')[0];
    if (DICTS[primary]) return primary;
  }
  return 'fr';
}

function readLang() {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved && DICTS[saved]) return saved;
  } catch { /* storage unavailable: the browser's preference */ }
  const nav = globalThis.navigator;
  return preferredLang(nav ? (nav.languages && nav.languages.length ? nav.languages : [nav.language]) : []);
}

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!DICTS[next]) return;
  lang = next;
  try { localStorage.setItem(KEY, next); } catch { /* not persisted, still applied */ }
  applyDocumentLang();
}

export function applyDocumentLang() {
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === 'ar' ? 'rtl' : 'ltr';
  document.title = t('app.name');
}

export function locale() {
  return LOCALES[lang];
}

export function t(key, params) {
  let s = DICTS[lang][key] ?? FR[key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

/** What a field's server-side refusal means, in the user's language (`context`: the form). */
const FIELD_ERRORS = {
  account: { name: 'valid.accountName', email: 'valid.email', password: 'valid.password' },
  project: {
    name: 'valid.nameRequired', client: 'valid.text', city: 'valid.text', notes: 'valid.text',
    budget_centimes: 'valid.budget', progress: 'valid.progress', status: 'valid.status',
    start_date: 'valid.date', end_date: 'valid.endBeforeStart',
  },
};

export function fieldError(field, context) {
  const key = (FIELD_ERRORS[context] || {})[field];
  return t(key || 'valid.invalid');
}

/**
 * A server error (an HTTP error's `code`, or a refused op's `reason`) in the user's
 * language — never the server's English text, which is for logs and developers.
 */
export function errorMessage(code, field) {
  if (code === 'conflict' && field === 'email') return t('apiError.emailTaken');
  if (['invalid_op', 'invalid_op_id', 'unknown_kind', 'invalid_id', 'invalid_base_seq', 'invalid_json', 'invalid_body', 'bad_request'].includes(code)) return t('apiError.invalid');
  const key = `apiError.${code}`;
  return key in FR ? t(key) : t('apiError.unknown');
}
